//! Batch conversion of MongoDB change events from BSON to relaxed Extended JSON.
//!
//! Why native: the CDC publish path and the bronze landing path handle every event,
//! and per-event Python work (pymongo's `json_util` measured ~25k events/s) is the
//! bottleneck. This module walks the raw BSON once, without building an owned tree,
//! and writes relaxed Extended JSON v2 as the MongoDB specification defines it:
//! dates between 1970 and 9999 as ISO-8601 strings and all others as `$numberLong`
//! milliseconds, non-finite doubles as `$numberDouble`, every other type as its
//! canonical wrapper. The Python side (`lakehouse_common.contract`) is the only caller of the
//! encoders; `scan` (the consumer side) is called by bronze_writer.

use base64::Engine;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

// The consumer side (bronze_writer): events to Arrow columns with each value's BSON type.
mod scan;

type ConvertResult<T> = Result<T, String>;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// True when any of the 8 bytes is a control character, `"` or `\`.
#[inline]
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |value: u64| value.wrapping_sub(ONES) & !value & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    (below_space | has_zero(word ^ (ONES * b'"' as u64)) | has_zero(word ^ (ONES * b'\\' as u64))) != 0
}

/// JSON needs `"` and `\` escaped and control characters written as escapes.
fn write_json_string(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    // Fast path: find the first byte that needs escaping, eight bytes at a time.
    let mut clean = 0;
    while clean + 8 <= text.len()
        && !word_needs_escape(u64::from_le_bytes(text[clean..clean + 8].try_into().unwrap()))
    {
        clean += 8;
    }
    let mut start = 0;
    for (index, &byte) in text.iter().enumerate().skip(clean) {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[start..index]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX_DIGITS[(byte >> 4) as usize]);
            out.push(HEX_DIGITS[(byte & 0xf) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        start = index + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

fn write_f64(out: &mut Vec<u8>, value: f64) {
    if value.is_nan() {
        out.extend_from_slice(br#"{"$numberDouble":"NaN"}"#);
    } else if value.is_infinite() {
        if value.is_sign_negative() {
            out.extend_from_slice(br#"{"$numberDouble":"-Infinity"}"#);
        } else {
            out.extend_from_slice(br#"{"$numberDouble":"Infinity"}"#);
        }
    } else {
        // zmij prints the shortest text that parses back to the same double, and always
        // keeps a fraction or exponent ("1.0", "-0.0", "1e+21"), so readers see a double.
        let mut buffer = zmij::Buffer::new();
        out.extend_from_slice(buffer.format_finite(value).as_bytes());
    }
}

fn write_i64(out: &mut Vec<u8>, value: i64) {
    let mut buffer = itoa::Buffer::new();
    out.extend_from_slice(buffer.format(value).as_bytes());
}

fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for &byte in bytes {
        out.push(HEX_DIGITS[(byte >> 4) as usize]);
        out.push(HEX_DIGITS[(byte & 0xf) as usize]);
    }
}

fn write_padded(out: &mut Vec<u8>, value: i64, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(value).as_bytes();
    for _ in digits.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(digits);
}

/// 253402300800000 ms is 10000-01-01T00:00:00Z: the spec keeps years 1970..=9999 as
/// ISO-8601 strings and everything else as `$numberLong` milliseconds.
const MAX_ISO_DATE_MILLIS: i64 = 253_402_300_800_000;

fn write_datetime(out: &mut Vec<u8>, millis: i64) {
    if !(0..MAX_ISO_DATE_MILLIS).contains(&millis) {
        out.extend_from_slice(br#"{"$date":{"$numberLong":""#);
        write_i64(out, millis);
        out.extend_from_slice(b"\"}}");
        return;
    }
    let days = millis / 86_400_000;
    let millis_of_day = millis % 86_400_000;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, proleptic Gregorian).
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    out.extend_from_slice(br#"{"$date":""#);
    write_padded(out, year, 4);
    out.push(b'-');
    write_padded(out, month, 2);
    out.push(b'-');
    write_padded(out, day, 2);
    out.push(b'T');
    write_padded(out, millis_of_day / 3_600_000, 2);
    out.push(b':');
    write_padded(out, millis_of_day / 60_000 % 60, 2);
    out.push(b':');
    write_padded(out, millis_of_day / 1000 % 60, 2);
    out.push(b'.');
    write_padded(out, millis_of_day % 1000, 3);
    out.extend_from_slice(b"Z\"}");
}

/// A bounds-checked cursor over one BSON document's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn take(&mut self, count: usize) -> ConvertResult<&'a [u8]> {
        let end = self
            .position
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("truncated BSON at byte {}", self.position))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn byte(&mut self) -> ConvertResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn i32(&mut self) -> ConvertResult<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn i64(&mut self) -> ConvertResult<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// A NUL-terminated name, not yet checked for UTF-8.
    #[inline]
    fn cstring_unchecked(&mut self) -> ConvertResult<&'a [u8]> {
        let rest = &self.bytes[self.position..];
        let length = rest
            .iter()
            .position(|&byte| byte == 0)
            .ok_or_else(|| format!("unterminated name at byte {}", self.position))?;
        self.position += length + 1;
        Ok(&rest[..length])
    }

    fn cstring(&mut self) -> ConvertResult<&'a [u8]> {
        let text = self.cstring_unchecked()?;
        utf8(text)?;
        Ok(text)
    }

    /// A BSON string: int32 length (with the trailing NUL), UTF-8 bytes, NUL.
    fn string(&mut self) -> ConvertResult<&'a [u8]> {
        let length = self.i32()?;
        if length < 1 {
            return Err(format!("invalid string length {length}"));
        }
        let body = self.take(length as usize)?;
        if body[body.len() - 1] != 0 {
            return Err("string is not NUL-terminated".to_owned());
        }
        let text = &body[..body.len() - 1];
        utf8(text)?;
        Ok(text)
    }

    /// An embedded document or array: its bytes, length prefix included.
    fn document(&mut self) -> ConvertResult<&'a [u8]> {
        let start = self.position;
        let length = self.i32()?;
        if length < 5 {
            return Err(format!("invalid document length {length}"));
        }
        self.position = start;
        self.take(length as usize)
    }
}

/// Moves past one value without converting it.
fn skip_value(element_type: u8, cursor: &mut Cursor<'_>) -> ConvertResult<()> {
    match element_type {
        0x01 | 0x09 | 0x11 | 0x12 => drop(cursor.take(8)?),
        0x02 | 0x0D | 0x0E => drop(cursor.string()?),
        0x03 | 0x04 | 0x0F => drop(cursor.document()?),
        0x05 => {
            let length = cursor.i32()?;
            if length < 0 {
                return Err(format!("invalid binary length {length}"));
            }
            cursor.take(length as usize + 1)?;
        }
        0x06 | 0x0A | 0x7F | 0xFF => {}
        0x07 => drop(cursor.take(12)?),
        0x08 => drop(cursor.take(1)?),
        0x0B => {
            cursor.cstring()?;
            cursor.cstring()?;
        }
        0x0C => {
            cursor.string()?;
            cursor.take(12)?;
        }
        0x10 => drop(cursor.take(4)?),
        0x13 => drop(cursor.take(16)?),
        other => return Err(format!("unknown BSON element type 0x{other:02x}")),
    }
    Ok(())
}

fn utf8(text: &[u8]) -> ConvertResult<()> {
    std::str::from_utf8(text)
        .map(|_| ())
        .map_err(|error| format!("invalid UTF-8: {error}"))
}

fn write_value(out: &mut Vec<u8>, element_type: u8, cursor: &mut Cursor<'_>) -> ConvertResult<()> {
    match element_type {
        0x01 => write_f64(out, f64::from_bits(cursor.i64()? as u64)),
        0x02 => write_json_string(out, cursor.string()?),
        0x03 => write_document(out, cursor.document()?, false)?,
        0x04 => write_document(out, cursor.document()?, true)?,
        0x05 => {
            let length = cursor.i32()?;
            if length < 0 {
                return Err(format!("invalid binary length {length}"));
            }
            let subtype = cursor.byte()?;
            let mut payload = cursor.take(length as usize)?;
            // Subtype 2 (old binary) repeats the length inside the payload.
            if subtype == 2 && payload.len() >= 4 {
                let inner = i32::from_le_bytes(payload[..4].try_into().unwrap());
                if inner as usize == payload.len() - 4 {
                    payload = &payload[4..];
                }
            }
            out.extend_from_slice(br#"{"$binary":{"base64":""#);
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(payload)
                    .as_bytes(),
            );
            out.extend_from_slice(br#"","subType":""#);
            write_hex(out, &[subtype]);
            out.extend_from_slice(b"\"}}");
        }
        0x06 => out.extend_from_slice(br#"{"$undefined":true}"#),
        0x07 => {
            out.extend_from_slice(br#"{"$oid":""#);
            write_hex(out, cursor.take(12)?);
            out.extend_from_slice(b"\"}");
        }
        0x08 => out.extend_from_slice(if cursor.byte()? != 0 { b"true" } else { b"false" }),
        0x09 => write_datetime(out, cursor.i64()?),
        0x0A => out.extend_from_slice(b"null"),
        0x0B => {
            let pattern = cursor.cstring()?;
            let mut options = cursor.cstring()?.to_vec();
            options.sort_unstable();
            out.extend_from_slice(br#"{"$regularExpression":{"pattern":"#);
            write_json_string(out, pattern);
            out.extend_from_slice(br#","options":"#);
            write_json_string(out, &options);
            out.extend_from_slice(b"}}");
        }
        0x0C => {
            let namespace = cursor.string()?;
            out.extend_from_slice(br#"{"$dbPointer":{"$ref":"#);
            write_json_string(out, namespace);
            out.extend_from_slice(br#","$id":{"$oid":""#);
            write_hex(out, cursor.take(12)?);
            out.extend_from_slice(b"\"}}}");
        }
        0x0D => {
            out.extend_from_slice(br#"{"$code":"#);
            write_json_string(out, cursor.string()?);
            out.push(b'}');
        }
        0x0E => {
            out.extend_from_slice(br#"{"$symbol":"#);
            write_json_string(out, cursor.string()?);
            out.push(b'}');
        }
        0x0F => {
            let _total_length = cursor.i32()?;
            out.extend_from_slice(br#"{"$code":"#);
            write_json_string(out, cursor.string()?);
            out.extend_from_slice(br#","$scope":"#);
            write_document(out, cursor.document()?, false)?;
            out.push(b'}');
        }
        0x10 => write_i64(out, i64::from(cursor.i32()?)),
        0x11 => {
            let value = cursor.i64()? as u64;
            out.extend_from_slice(br#"{"$timestamp":{"t":"#);
            write_i64(out, (value >> 32) as i64);
            out.extend_from_slice(br#","i":"#);
            write_i64(out, (value & 0xffff_ffff) as i64);
            out.extend_from_slice(b"}}");
        }
        0x12 => write_i64(out, cursor.i64()?),
        0x13 => {
            let bytes: [u8; 16] = cursor.take(16)?.try_into().unwrap();
            out.extend_from_slice(br#"{"$numberDecimal":""#);
            out.extend_from_slice(bson::Decimal128::from_bytes(bytes).to_string().as_bytes());
            out.extend_from_slice(b"\"}");
        }
        0x7F => out.extend_from_slice(br#"{"$maxKey":1}"#),
        0xFF => out.extend_from_slice(br#"{"$minKey":1}"#),
        other => return Err(format!("unknown BSON element type 0x{other:02x}")),
    }
    Ok(())
}

/// Writes a document (or, for arrays, only its values) as JSON.
fn write_document(out: &mut Vec<u8>, bytes: &[u8], is_array: bool) -> ConvertResult<()> {
    if bytes.len() < 5 || i32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize != bytes.len() {
        return Err("invalid BSON document length".to_owned());
    }
    if bytes[bytes.len() - 1] != 0 {
        return Err("BSON document is not NUL-terminated".to_owned());
    }
    let mut cursor = Cursor { bytes: &bytes[..bytes.len() - 1], position: 4 };
    out.push(if is_array { b'[' } else { b'{' });
    let mut first = true;
    while cursor.position < cursor.bytes.len() {
        let element_type = cursor.byte()?;
        if !first {
            out.push(b',');
        }
        first = false;
        if is_array {
            // Array keys are "0", "1", ...: JSON drops them, so they need no check.
            cursor.cstring_unchecked()?;
        } else {
            write_json_string(out, cursor.cstring()?);
            out.push(b':');
        }
        write_value(out, element_type, &mut cursor)?;
    }
    out.push(if is_array { b']' } else { b'}' });
    Ok(())
}

fn document_to_json(bytes: &[u8]) -> ConvertResult<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 4);
    write_document(&mut out, bytes, false)?;
    Ok(out)
}

/// The top-level fields the contract reads from a change event, borrowed from its bytes.
#[derive(Default)]
struct EventFields<'a> {
    token: Option<&'a [u8]>,
    operation: Option<&'a [u8]>,
    namespace: Option<&'a [u8]>,
    document_key: Option<&'a [u8]>,
    cluster_time: Option<(u32, u32)>,
}

/// Reads the top-level fields of an event in one pass, skipping the large ones.
fn scan_event(bytes: &[u8]) -> ConvertResult<EventFields<'_>> {
    if bytes.len() < 5 || i32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize != bytes.len() {
        return Err("invalid BSON document length".to_owned());
    }
    let mut fields = EventFields::default();
    let mut cursor = Cursor { bytes: &bytes[..bytes.len() - 1], position: 4 };
    while cursor.position < cursor.bytes.len() {
        let element_type = cursor.byte()?;
        let name = cursor.cstring()?;
        match (name, element_type) {
            (b"_id", 0x03) => fields.token = Some(cursor.document()?),
            (b"operationType", 0x02) => fields.operation = Some(cursor.string()?),
            (b"ns", 0x03) => fields.namespace = Some(cursor.document()?),
            (b"documentKey", 0x03) => fields.document_key = Some(cursor.document()?),
            (b"clusterTime", 0x11) => {
                let value = cursor.i64()? as u64;
                fields.cluster_time = Some(((value >> 32) as u32, (value & 0xffff_ffff) as u32));
            }
            _ => skip_value(element_type, &mut cursor)?,
        }
    }
    Ok(fields)
}

/// The string value of `field` in a small embedded document.
fn string_field<'a>(document: &'a [u8], field: &[u8]) -> ConvertResult<Option<&'a [u8]>> {
    let mut cursor = Cursor { bytes: &document[..document.len() - 1], position: 4 };
    while cursor.position < cursor.bytes.len() {
        let element_type = cursor.byte()?;
        let name = cursor.cstring()?;
        if name == field && element_type == 0x02 {
            return Ok(Some(cursor.string()?));
        }
        skip_value(element_type, &mut cursor)?;
    }
    Ok(None)
}

fn owned_text(bytes: &[u8]) -> String {
    // Validated as UTF-8 by the cursor.
    String::from_utf8_lossy(bytes).into_owned()
}

/// Splits concatenated BSON documents (a raw cursor batch) into slices.
fn split_concatenated(batch: &[u8]) -> ConvertResult<Vec<&[u8]>> {
    let mut documents = Vec::new();
    let mut offset = 0usize;
    while offset < batch.len() {
        if batch.len() - offset < 5 {
            return Err(format!("truncated BSON document at byte {offset}"));
        }
        let length = i32::from_le_bytes(batch[offset..offset + 4].try_into().unwrap());
        if length < 5 || offset + length as usize > batch.len() {
            return Err(format!("invalid BSON document length {length} at byte {offset}"));
        }
        documents.push(&batch[offset..offset + length as usize]);
        offset += length as usize;
    }
    Ok(documents)
}

/// Holds the bytes objects of one call: a `bytes` object of concatenated documents
/// (a raw cursor batch), or a list of bytes-like objects, one per document.
fn collect_holders<'py>(documents: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    if let Ok(batch) = documents.cast::<PyBytes>() {
        return Ok(vec![batch.clone()]);
    }
    let list = documents.cast::<PyList>().map_err(|_| {
        PyValueError::new_err("expected bytes (concatenated BSON) or a list of bytes")
    })?;
    let mut holders = Vec::with_capacity(list.len());
    for item in list.iter() {
        let bytes = match item.cast::<PyBytes>() {
            Ok(bytes) => bytes.clone(),
            // RawBSONDocument and memoryview expose their bytes through `.raw` or bytes().
            Err(_) => match item.getattr("raw") {
                Ok(raw) => raw.cast_into::<PyBytes>()?,
                Err(_) => PyBytes::new(item.py(), &item.extract::<Vec<u8>>()?),
            },
        };
        holders.push(bytes);
    }
    Ok(holders)
}

/// One slice per document, borrowed from the holders.
fn document_slices<'a>(
    documents: &Bound<'_, PyAny>,
    holders: &'a [Bound<'_, PyBytes>],
) -> PyResult<Vec<&'a [u8]>> {
    if documents.is_instance_of::<PyBytes>() {
        return split_concatenated(holders[0].as_bytes()).map_err(PyValueError::new_err);
    }
    Ok(holders.iter().map(|bytes| bytes.as_bytes()).collect())
}

/// relaxed_json(document: bytes) -> bytes
///
/// One BSON document as relaxed Extended JSON (UTF-8, compact).
#[pyfunction]
fn relaxed_json<'py>(py: Python<'py>, document: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let json = document_to_json(document).map_err(PyValueError::new_err)?;
    Ok(PyBytes::new(py, &json))
}

/// to_ndjson(documents: bytes | list[bytes]) -> bytes
///
/// Many BSON documents as newline-delimited relaxed Extended JSON, ready for a
/// vectorized JSON reader (Polars, Arrow).
#[pyfunction]
fn to_ndjson<'py>(py: Python<'py>, documents: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let holders = collect_holders(documents)?;
    let slices = document_slices(documents, &holders)?;
    let total: usize = slices.iter().map(|slice| slice.len()).sum();
    let mut out = Vec::with_capacity(total + total / 4 + slices.len());
    for (index, slice) in slices.iter().enumerate() {
        write_document(&mut out, slice, false)
            .map_err(|error| PyValueError::new_err(format!("document {index}: {error}")))?;
        out.push(b'\n');
    }
    Ok(PyBytes::new(py, &out))
}

struct EncodedEvent {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    event_id: String,
    operation: String,
    database: Option<String>,
    collection: Option<String>,
    cluster_time: Option<(u32, u32)>,
}

fn encode_event(bytes: &[u8], as_json: bool) -> ConvertResult<EncodedEvent> {
    let fields = scan_event(bytes)?;
    let token = fields.token.ok_or("missing _id (the resume token)")?;
    let event_id = string_field(token, b"_data")?.ok_or("missing _id._data")?;
    let operation = fields.operation.ok_or("missing operationType")?;
    let (database, collection) = match fields.namespace {
        Some(namespace) => (
            string_field(namespace, b"db")?.map(owned_text),
            string_field(namespace, b"coll")?.map(owned_text),
        ),
        None => (None, None),
    };
    let key = match fields.document_key {
        Some(document_key) => Some(document_to_json(document_key)?),
        None => None,
    };
    let value = if as_json { Some(document_to_json(bytes)?) } else { None };
    Ok(EncodedEvent {
        key,
        value,
        event_id: owned_text(event_id),
        operation: owned_text(operation),
        database,
        collection,
        cluster_time: fields.cluster_time,
    })
}

/// encode_change_events(events: bytes | list[bytes], value_format: str) -> list[tuple]
///
/// For each change event (BSON): (key, value, event_id, operation, db, coll, cluster_time).
/// key is the relaxed Extended JSON of documentKey, or None for events without one
/// (drop, rename, dropDatabase, invalidate). value is relaxed Extended JSON for
/// value_format "json" and the event's own BSON bytes for "bson". cluster_time is
/// (seconds, increment) or None. Raises ValueError naming the first bad event.
#[pyfunction]
fn encode_change_events<'py>(
    py: Python<'py>,
    events: &Bound<'py, PyAny>,
    value_format: &str,
) -> PyResult<Bound<'py, PyList>> {
    let as_json = match value_format {
        "json" => true,
        "bson" => false,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown value format {other:?}: expected \"json\" or \"bson\""
            )))
        }
    };
    let holders = collect_holders(events)?;
    let slices = document_slices(events, &holders)?;
    let encoded: Vec<ConvertResult<EncodedEvent>> = py.detach(|| {
        slices
            .iter()
            .map(|slice| encode_event(slice, as_json))
            .collect()
    });
    let result = PyList::empty(py);
    for (index, (event, slice)) in encoded.into_iter().zip(slices.iter()).enumerate() {
        let event = event.map_err(|error| {
            PyValueError::new_err(format!("change event {index}: {error}"))
        })?;
        let value = match event.value {
            Some(json) => PyBytes::new(py, &json),
            None => PyBytes::new(py, slice),
        };
        let key = event.key.map(|key| PyBytes::new(py, &key));
        let item = PyTuple::new(
            py,
            [
                key.into_pyobject(py)?.into_any(),
                value.into_any(),
                event.event_id.into_pyobject(py)?.into_any(),
                event.operation.into_pyobject(py)?.into_any(),
                event.database.into_pyobject(py)?.into_any(),
                event.collection.into_pyobject(py)?.into_any(),
                event.cluster_time.into_pyobject(py)?.into_any(),
            ],
        )?;
        result.append(item)?;
    }
    Ok(result)
}

#[pymodule]
fn lakehouse_codec(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(relaxed_json, module)?)?;
    module.add_function(wrap_pyfunction!(to_ndjson, module)?)?;
    module.add_function(wrap_pyfunction!(encode_change_events, module)?)?;
    module.add_function(wrap_pyfunction!(scan::scan_change_events, module)?)?;
    Ok(())
}
