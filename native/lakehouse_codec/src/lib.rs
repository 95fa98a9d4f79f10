//! Batch conversion of MongoDB change events from BSON to relaxed Extended JSON.
//!
//! Why native: the CDC publish path and the bronze landing path handle every event,
//! and per-event Python work (pymongo's `json_util` measured ~25k events/s) is the
//! bottleneck. `bson_json` walks the raw BSON once, without building an owned tree,
//! and writes relaxed Extended JSON v2 as the MongoDB specification defines it:
//! dates between 1970 and 9999 as ISO-8601 strings and all others as `$numberLong`
//! milliseconds, non-finite doubles as `$numberDouble`, every other type as its
//! canonical wrapper. The Python side (`lakehouse_common.contract`) is the only caller of the
//! encoders; `scan` (the consumer side) is called by bronze_writer.
//!
//! Nothing an input holds may take the process down: malformed or too deeply nested input
//! (see `bson_json::MAX_NESTING_DEPTH`) is a `ValueError`, no walk recurses, and a Rust
//! panic reaches Python as `pyo3_runtime.PanicException` (a `BaseException`) instead of
//! aborting, because the crate unwinds on panic (Cargo's default; never set `panic = "abort"`).

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

// BSON to relaxed Extended JSON: the producer side (cdc_service) and BSON values on the consumer side.
mod bson_json;
// The consumer side (bronze_writer): events to Arrow columns with each value's BSON type.
mod scan;

use bson_json::{ConvertResult, EventFields, JsonWriter};

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

    fn i32(&mut self) -> ConvertResult<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn i64(&mut self) -> ConvertResult<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// A NUL-terminated name (not checked for UTF-8: see `scan_event`).
    fn name(&mut self) -> ConvertResult<&'a [u8]> {
        let rest = &self.bytes[self.position..];
        let length = rest
            .iter()
            .position(|&byte| byte == 0)
            .ok_or_else(|| format!("unterminated name at byte {}", self.position))?;
        self.position += length + 1;
        Ok(&rest[..length])
    }

    /// A BSON string: int32 length (with the trailing NUL), bytes, NUL (not checked for UTF-8).
    fn string(&mut self) -> ConvertResult<&'a [u8]> {
        let length = self.i32()?;
        if length < 1 {
            return Err(format!("invalid string length {length}"));
        }
        let body = self.take(length as usize)?;
        match body.split_last() {
            Some((0, text)) => Ok(text),
            _ => Err("string is not NUL-terminated".to_owned()),
        }
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
            cursor.name()?;
            cursor.name()?;
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

/// Reads the top-level fields of a BSON-format event in one pass, skipping the others
/// unread: the bytes are published as they are, and the consumer converts (and so
/// validates) them whole. Returns the fields and `documentKey`'s bytes; the texts the
/// contract reads are checked for UTF-8 by `encode_event`.
fn scan_event(bytes: &[u8]) -> ConvertResult<(EventFields<'_>, Option<&[u8]>)> {
    if bytes.len() < 5 || i32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize != bytes.len() {
        return Err("invalid BSON document length".to_owned());
    }
    let mut fields = EventFields::default();
    let mut document_key = None;
    let mut cursor = Cursor { bytes: &bytes[..bytes.len() - 1], position: 4 };
    while cursor.position < cursor.bytes.len() {
        let element_type = cursor.take(1)?[0];
        let name = cursor.name()?;
        match (name, element_type) {
            (b"_id", 0x03) => fields.token = Some(cursor.document()?),
            (b"operationType", 0x02) => fields.operation = Some(cursor.string()?),
            (b"ns", 0x03) => fields.namespace = Some(cursor.document()?),
            (b"documentKey", 0x03) => document_key = Some(cursor.document()?),
            (b"clusterTime", 0x11) => {
                let value = cursor.i64()? as u64;
                fields.cluster_time = Some(((value >> 32) as u32, (value & 0xffff_ffff) as u32));
            }
            _ => skip_value(element_type, &mut cursor)?,
        }
    }
    Ok((fields, document_key))
}

/// The string value of `field` in a small embedded document.
fn string_field<'a>(document: &'a [u8], field: &[u8]) -> ConvertResult<Option<&'a [u8]>> {
    let body = document.len().checked_sub(1).ok_or("invalid BSON document length")?;
    let mut cursor = Cursor { bytes: &document[..body], position: 4 };
    while cursor.position < cursor.bytes.len() {
        let element_type = cursor.take(1)?[0];
        let name = cursor.name()?;
        if name == field && element_type == 0x02 {
            return Ok(Some(cursor.string()?));
        }
        skip_value(element_type, &mut cursor)?;
    }
    Ok(None)
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

/// The bytes objects of one call: a `bytes` object of concatenated documents (a raw
/// cursor batch), or a list of bytes-like objects, one per document.
struct Documents<'py> {
    holders: Vec<Bound<'py, PyBytes>>,
    /// One `bytes` object holding every document back to back.
    concatenated: bool,
}

impl<'py> Documents<'py> {
    fn hold(documents: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(batch) = documents.cast::<PyBytes>() {
            return Ok(Documents { holders: vec![batch.clone()], concatenated: true });
        }
        let list = documents.cast::<PyList>().map_err(|_| {
            PyValueError::new_err("expected bytes (concatenated BSON) or a list of bytes")
        })?;
        let raw = pyo3::intern!(documents.py(), "raw");
        let mut holders = Vec::with_capacity(list.len());
        for item in list.iter() {
            let bytes = match item.cast_into::<PyBytes>() {
                Ok(bytes) => bytes,
                // RawBSONDocument exposes its bytes as `.raw`; memoryview and bytearray through bytes().
                Err(error) => {
                    let item = error.into_inner();
                    match item.getattr(raw) {
                        Ok(raw) => raw.cast_into::<PyBytes>()?,
                        Err(_) => PyBytes::new(item.py(), &item.extract::<Vec<u8>>()?),
                    }
                }
            };
            holders.push(bytes);
        }
        Ok(Documents { holders, concatenated: false })
    }

    /// One slice per document, borrowed from the holders.
    fn slices(&self) -> PyResult<Vec<&[u8]>> {
        if self.concatenated {
            return split_concatenated(self.holders[0].as_bytes()).map_err(PyValueError::new_err);
        }
        Ok(self.holders.iter().map(|bytes| bytes.as_bytes()).collect())
    }
}

/// relaxed_json(document: bytes) -> bytes
///
/// One BSON document as relaxed Extended JSON (UTF-8, compact).
#[pyfunction]
fn relaxed_json<'py>(py: Python<'py>, document: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let mut json = Vec::new();
    JsonWriter::default()
        .write_document(&mut json, document)
        .map_err(PyValueError::new_err)?;
    Ok(PyBytes::new(py, &json))
}

/// to_ndjson(documents: bytes | list[bytes]) -> bytes
///
/// Many BSON documents as newline-delimited relaxed Extended JSON, ready for a
/// vectorized JSON reader (Polars, Arrow).
#[pyfunction]
fn to_ndjson<'py>(py: Python<'py>, documents: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let documents = Documents::hold(documents)?;
    let slices = documents.slices()?;
    let out = py
        .detach(|| {
            let total: usize = slices.iter().map(|slice| slice.len()).sum();
            let mut out = Vec::with_capacity(total + total / 2 + slices.len());
            let mut writer = JsonWriter::default();
            for (index, slice) in slices.iter().enumerate() {
                writer
                    .write_document(&mut out, slice)
                    .map_err(|error| format!("document {index}: {error}"))?;
                out.push(b'\n');
            }
            Ok::<_, String>(out)
        })
        .map_err(PyValueError::new_err)?;
    Ok(PyBytes::new(py, &out))
}

/// One event's parts: JSON as ranges of the batch's output buffer, the rest borrowed
/// from the event's (validated) bytes.
struct EncodedEvent<'a> {
    key: Option<(usize, usize)>,
    /// None for the `bson` format: the value is the event's own bytes.
    value: Option<(usize, usize)>,
    event_id: &'a [u8],
    operation: &'a [u8],
    database: Option<&'a [u8]>,
    collection: Option<&'a [u8]>,
    cluster_time: Option<(u32, u32)>,
}

/// Appends an event's JSON (format `json`) or its key's JSON (`bson`) to `out`.
fn encode_event<'a>(
    writer: &mut JsonWriter,
    out: &mut Vec<u8>,
    bytes: &'a [u8],
    as_json: bool,
) -> ConvertResult<EncodedEvent<'a>> {
    let start = out.len();
    let (fields, value) = if as_json {
        let mut fields = EventFields::default();
        writer.write_event(out, bytes, &mut fields)?;
        (fields, Some((start, out.len())))
    } else {
        let (mut fields, document_key) = scan_event(bytes)?;
        if let Some(document_key) = document_key {
            writer.write_document(out, document_key)?;
            fields.document_key_json = Some((start, out.len()));
        }
        (fields, None)
    };
    let token = fields.token.ok_or("missing _id (the resume token)")?;
    let event_id = string_field(token, b"_data")?.ok_or("missing _id._data")?;
    let operation = fields.operation.ok_or("missing operationType")?;
    let (database, collection) = match fields.namespace {
        Some(namespace) => (string_field(namespace, b"db")?, string_field(namespace, b"coll")?),
        None => (None, None),
    };
    if !as_json {
        // The JSON walk checked them already.
        for text in [Some(event_id), Some(operation), database, collection].into_iter().flatten() {
            std::str::from_utf8(text).map_err(|error| format!("invalid UTF-8: {error}"))?;
        }
    }
    Ok(EncodedEvent {
        key: fields.document_key_json,
        value,
        event_id,
        operation,
        database,
        collection,
        cluster_time: fields.cluster_time,
    })
}

/// The last Python string made for a repeated field (operation, database, collection):
/// consecutive events mostly share them, so each is created once per run, not per event.
#[derive(Default)]
struct RepeatedText<'a, 'py> {
    last: Option<(&'a [u8], Bound<'py, PyString>)>,
}

impl<'a, 'py> RepeatedText<'a, 'py> {
    fn get(&mut self, py: Python<'py>, text: &'a [u8]) -> PyResult<Bound<'py, PyString>> {
        if let Some((bytes, string)) = &self.last {
            if *bytes == text {
                return Ok(string.clone());
            }
        }
        let string = PyString::from_bytes(py, text)?;
        self.last = Some((text, string.clone()));
        Ok(string)
    }

    fn get_optional(&mut self, py: Python<'py>, text: Option<&'a [u8]>) -> PyResult<Option<Bound<'py, PyString>>> {
        text.map(|text| self.get(py, text)).transpose()
    }
}

fn as_json(value_format: &str) -> PyResult<bool> {
    match value_format {
        "json" => Ok(true),
        "bson" => Ok(false),
        other => Err(PyValueError::new_err(format!(
            "unknown value format {other:?}: expected \"json\" or \"bson\""
        ))),
    }
}

/// Encodes every event of a call without holding the GIL: one output buffer for the JSON,
/// and each event's parts. A ValueError names the first bad event.
fn encode_all<'a>(py: Python<'_>, slices: &[&'a [u8]], as_json: bool) -> PyResult<(Vec<u8>, Vec<EncodedEvent<'a>>)> {
    py.detach(|| {
        let total: usize = slices.iter().map(|slice| slice.len()).sum();
        let mut out = Vec::with_capacity(if as_json { total + total / 2 } else { 64 * slices.len() });
        let mut writer = JsonWriter::default();
        let mut encoded = Vec::with_capacity(slices.len());
        for (index, slice) in slices.iter().enumerate() {
            let event = encode_event(&mut writer, &mut out, slice, as_json)
                .map_err(|error| format!("change event {index}: {error}"))?;
            encoded.push(event);
        }
        Ok::<_, String>((out, encoded))
    })
    .map_err(PyValueError::new_err)
}

/// An event's value: its JSON, or (format `bson`) its own bytes, the caller's very object when given a list.
fn value_bytes<'py>(
    py: Python<'py>,
    documents: &Documents<'py>,
    slices: &[&[u8]],
    out: &[u8],
    index: usize,
    value: Option<(usize, usize)>,
) -> Bound<'py, PyBytes> {
    match value {
        Some((start, end)) => PyBytes::new(py, &out[start..end]),
        None if documents.concatenated => PyBytes::new(py, slices[index]),
        None => documents.holders[index].clone(),
    }
}

/// encode_change_events(events: bytes | list[bytes], value_format: str) -> list[tuple]
///
/// For each change event (BSON): (key, value, event_id, operation, db, coll, cluster_time).
/// key is the relaxed Extended JSON of documentKey, or None for events without one
/// (drop, rename, dropDatabase, invalidate). value is relaxed Extended JSON for
/// value_format "json" and the event's own BSON bytes for "bson" (the very bytes object
/// given, when events is a list). cluster_time is (seconds, increment) or None. Raises
/// ValueError naming the first bad event.
#[pyfunction]
fn encode_change_events<'py>(
    py: Python<'py>,
    events: &Bound<'py, PyAny>,
    value_format: &str,
) -> PyResult<Bound<'py, PyList>> {
    let as_json = as_json(value_format)?;
    let documents = Documents::hold(events)?;
    let slices = documents.slices()?;
    let (out, encoded) = encode_all(py, &slices, as_json)?;
    let mut operations = RepeatedText::default();
    let mut databases = RepeatedText::default();
    let mut collections = RepeatedText::default();
    let mut items = Vec::with_capacity(encoded.len());
    for (index, event) in encoded.into_iter().enumerate() {
        let value = value_bytes(py, &documents, &slices, &out, index, event.value);
        let key = event.key.map(|(start, end)| PyBytes::new(py, &out[start..end]));
        let item = PyTuple::new(
            py,
            [
                key.into_pyobject(py)?.into_any(),
                value.into_any(),
                PyString::from_bytes(py, event.event_id)?.into_any(),
                operations.get(py, event.operation)?.into_any(),
                databases.get_optional(py, event.database)?.into_pyobject(py)?.into_any(),
                collections.get_optional(py, event.collection)?.into_pyobject(py)?.into_any(),
                event.cluster_time.into_pyobject(py)?.into_any(),
            ],
        )?;
        items.push(item);
    }
    PyList::new(py, items)
}

/// A batch's distinct values of a field, each given an index in first-appearance order;
/// consecutive events mostly share one, so the last is tried first.
struct Distinct<K> {
    indexes: HashMap<K, usize>,
    last: Option<(K, usize)>,
}

impl<K: std::hash::Hash + Eq + Copy> Distinct<K> {
    fn new() -> Self {
        Distinct { indexes: HashMap::new(), last: None }
    }

    /// The value's index, and whether it is new.
    fn index(&mut self, value: K) -> (usize, bool) {
        if let Some((last, index)) = self.last {
            if last == value {
                return (index, false);
            }
        }
        let next = self.indexes.len();
        let index = *self.indexes.entry(value).or_insert(next);
        self.last = Some((value, index));
        (index, index == next)
    }
}

/// encode_change_batch(events, value_format, leading_headers, event_id_header, operation_header) -> tuple
///
/// The encoding of `encode_change_events`, shaped for `Producer.produce`: columns instead of
/// one tuple per event, the contract headers built here, the events counted here, so the
/// publisher needs no Python work per event. Returns a tuple
/// (keys, values, headers, namespaces, namespace_of, counts, largest):
/// - keys, values: one per event, as `encode_change_events` makes them;
/// - headers: one list per event: the `leading_headers` tuples (the same objects for every
///   event), then (event_id_header, event id as bytes) and (operation_header, operation as
///   bytes), the latter one tuple per distinct operation;
/// - namespaces: the distinct (db, coll) pairs (either may be None), in order of appearance;
/// - namespace_of: each event's index in namespaces, or None when the batch has at most one;
/// - counts: (operation, namespace index, events) per distinct pair, in order of appearance;
/// - largest: the largest len(key) + len(value) of the batch (0 when it is empty).
/// Raises ValueError naming the first bad event.
#[pyfunction]
fn encode_change_batch<'py>(
    py: Python<'py>,
    events: &Bound<'py, PyAny>,
    value_format: &str,
    leading_headers: &Bound<'py, PyList>,
    event_id_header: &Bound<'py, PyString>,
    operation_header: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyTuple>> {
    let as_json = as_json(value_format)?;
    let leading: Vec<Bound<'py, PyAny>> = leading_headers.iter().collect();
    let documents = Documents::hold(events)?;
    let slices = documents.slices()?;
    let (out, encoded) = encode_all(py, &slices, as_json)?;
    let count = encoded.len();
    let mut keys = Vec::with_capacity(count);
    let mut values = Vec::with_capacity(count);
    let mut headers = Vec::with_capacity(count);
    let mut namespace_of = Vec::with_capacity(count);
    let mut operations: Distinct<&[u8]> = Distinct::new();
    let mut operation_items: Vec<(Bound<'py, PyString>, Bound<'py, PyTuple>)> = Vec::new();
    let mut namespaces: Distinct<(Option<&[u8]>, Option<&[u8]>)> = Distinct::new();
    let mut namespace_items = Vec::new();
    let mut pairs: Distinct<(usize, usize)> = Distinct::new();
    let mut counts: Vec<(usize, usize, usize)> = Vec::new();
    let mut largest = 0;
    let mut items = Vec::with_capacity(leading.len() + 2);
    for (index, event) in encoded.into_iter().enumerate() {
        let value = value_bytes(py, &documents, &slices, &out, index, event.value);
        let key_length = event.key.map_or(0, |(start, end)| end - start);
        largest = largest.max(value.as_bytes().len() + key_length);
        let key = match event.key {
            Some((start, end)) => PyBytes::new(py, &out[start..end]).into_any(),
            None => py.None().into_bound(py),
        };
        let (operation, new_operation) = operations.index(event.operation);
        if new_operation {
            let text = PyString::from_bytes(py, event.operation)?;
            let header = PyTuple::new(py, [operation_header.as_any(), PyBytes::new(py, event.operation).as_any()])?;
            operation_items.push((text, header));
        }
        let (namespace, new_namespace) = namespaces.index((event.database, event.collection));
        if new_namespace {
            let database = event.database.map(|text| PyString::from_bytes(py, text)).transpose()?;
            let collection = event.collection.map(|text| PyString::from_bytes(py, text)).transpose()?;
            namespace_items.push(PyTuple::new(
                py,
                [database.into_pyobject(py)?.into_any(), collection.into_pyobject(py)?.into_any()],
            )?);
        }
        let (pair, new_pair) = pairs.index((operation, namespace));
        if new_pair {
            counts.push((operation, namespace, 0));
        }
        counts[pair].2 += 1;
        let event_id = PyTuple::new(py, [event_id_header.as_any(), PyBytes::new(py, event.event_id).as_any()])?;
        items.extend(leading.iter().cloned());
        items.push(event_id.into_any());
        items.push(operation_items[operation].1.clone().into_any());
        let event_headers = PyList::new(py, items.drain(..))?;
        keys.push(key);
        values.push(value);
        headers.push(event_headers);
        namespace_of.push(namespace);
    }
    let namespace_of = if namespace_items.len() > 1 {
        PyList::new(py, namespace_of)?.into_any()
    } else {
        py.None().into_bound(py)
    };
    let counts = counts
        .into_iter()
        .map(|(operation, namespace, events)| (operation_items[operation].0.clone(), namespace, events))
        .collect::<Vec<_>>();
    PyTuple::new(
        py,
        [
            PyList::new(py, keys)?.into_any(),
            PyList::new(py, values)?.into_any(),
            PyList::new(py, headers)?.into_any(),
            PyList::new(py, namespace_items)?.into_any(),
            namespace_of,
            PyList::new(py, counts)?.into_any(),
            largest.into_pyobject(py)?.into_any(),
        ],
    )
}

/// _raise_panic(message: str) -> None
///
/// Panics in Rust on purpose, so tests can prove a native panic reaches Python as
/// `PanicException` (and that callers guard their batch boundary against it) instead of
/// aborting the process.
#[pyfunction]
fn _raise_panic(message: &str) {
    panic!("{message}");
}

#[pymodule]
fn lakehouse_codec(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(relaxed_json, module)?)?;
    module.add_function(wrap_pyfunction!(to_ndjson, module)?)?;
    module.add_function(wrap_pyfunction!(encode_change_events, module)?)?;
    module.add_function(wrap_pyfunction!(encode_change_batch, module)?)?;
    module.add_function(wrap_pyfunction!(scan::scan_change_events, module)?)?;
    module.add_function(wrap_pyfunction!(scan::collect_messages, module)?)?;
    module.add_function(wrap_pyfunction!(scan::scan_record_values, module)?)?;
    module.add_class::<scan::RecordValues>()?;
    module.add_function(wrap_pyfunction!(_raise_panic, module)?)?;
    Ok(())
}
