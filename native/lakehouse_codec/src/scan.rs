//! The consumer side of the contract: change events (relaxed Extended JSON) to columns.
//!
//! Why native: bronze_writer needs, for every event, the envelope fields, the exact JSON
//! of the payload parts, and each top-level field of `fullDocument` with its BSON type.
//! Polars and Arrow parse JSON vectorized but cast as they go (2.7 read as an integer
//! becomes 2, 8 read as a string becomes "8") and cannot return a value's own JSON,
//! so they cannot tell a type change from a value. This walks each event once with
//! serde_json (borrowing, no tree) and returns Arrow buffers: every column is
//! `(validity bitmap, offsets or values, data)`, wrapped without copying on the Python side.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// BSON types as seen through relaxed Extended JSON, one byte per value (0: field absent).
pub mod kind {
    pub const ABSENT: u8 = 0;
    pub const NULL: u8 = 1;
    pub const BOOL: u8 = 2;
    pub const INT32: u8 = 3;
    pub const INT64: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const STRING: u8 = 6;
    pub const OBJECT_ID: u8 = 7;
    pub const DATE_ISO: u8 = 8;
    pub const DATE_MILLIS: u8 = 9;
    pub const DECIMAL: u8 = 10;
    pub const DOCUMENT: u8 = 11;
    pub const ARRAY: u8 = 12;
    pub const BINARY: u8 = 13;
    pub const TIMESTAMP: u8 = 14;
    pub const REGEX: u8 = 15;
    pub const JAVASCRIPT: u8 = 16;
    pub const JAVASCRIPT_WITH_SCOPE: u8 = 17;
    pub const SYMBOL: u8 = 18;
    pub const MIN_KEY: u8 = 19;
    pub const MAX_KEY: u8 = 20;
    pub const UNDEFINED: u8 = 21;
    pub const DB_POINTER: u8 = 22;
}

/// An object's members in document order, values left as raw JSON.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for MembersVisitor<'a> {
            type Value = Members<'a>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(entry) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "_id", borrow)]
    id: Option<&'a RawValue>,
    #[serde(rename = "operationType", borrow)]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ns: Option<Namespace<'a>>,
    #[serde(rename = "documentKey", borrow)]
    document_key: Option<&'a RawValue>,
    #[serde(rename = "clusterTime", borrow)]
    cluster_time: Option<&'a RawValue>,
    #[serde(rename = "wallTime", borrow)]
    wall_time: Option<&'a RawValue>,
    #[serde(borrow)]
    lsid: Option<&'a RawValue>,
    #[serde(rename = "txnNumber", borrow)]
    txn_number: Option<&'a RawValue>,
    #[serde(rename = "fullDocument", borrow)]
    full_document: Option<Members<'a>>,
    #[serde(rename = "updateDescription", borrow)]
    update_description: Option<&'a RawValue>,
    #[serde(rename = "fullDocumentBeforeChange", borrow)]
    full_document_before_change: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Namespace<'a> {
    #[serde(borrow)]
    db: Option<Cow<'a, str>>,
    #[serde(borrow)]
    coll: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ResumeToken<'a> {
    #[serde(rename = "_data", borrow)]
    data: Cow<'a, str>,
}

#[derive(Deserialize)]
struct TimestampWrapper {
    #[serde(rename = "$timestamp")]
    timestamp: TimestampParts,
}

#[derive(Deserialize)]
struct TimestampParts {
    t: u32,
    i: u32,
}

/// A value's BSON kind and its text: unescaped for strings and scalar wrappers, JSON otherwise.
fn classify(raw: &RawValue) -> Result<(u8, Option<Cow<'_, str>>), String> {
    let text = raw.get().trim();
    let first = text.as_bytes().first().copied().unwrap_or(b'n');
    match first {
        b'n' => Ok((kind::NULL, None)),
        b't' | b'f' => Ok((kind::BOOL, Some(Cow::Borrowed(text)))),
        b'"' => Ok((kind::STRING, Some(string_content(text)?))),
        b'[' => Ok((kind::ARRAY, Some(Cow::Borrowed(text)))),
        b'{' => classify_object(text),
        _ => {
            if text.bytes().any(|byte| matches!(byte, b'.' | b'e' | b'E')) {
                Ok((kind::DOUBLE, Some(Cow::Borrowed(text))))
            } else {
                Ok((integer_kind(text), Some(Cow::Borrowed(text))))
            }
        }
    }
}

fn integer_kind(digits: &str) -> u8 {
    match digits.parse::<i64>() {
        Ok(value) if i32::try_from(value).is_ok() => kind::INT32,
        _ => kind::INT64,
    }
}

/// A JSON string's content; serde_json already validated it, so without escapes it is the inner slice.
fn string_content(text: &str) -> Result<Cow<'_, str>, String> {
    let inner = &text[1..text.len() - 1];
    if !inner.as_bytes().contains(&b'\\') {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<Cow<str>>(text).map_err(|error| error.to_string())
}

fn unescape(raw: &RawValue) -> Result<Option<Cow<'_, str>>, String> {
    let text = raw.get().trim();
    if !text.starts_with('"') {
        return Err(format!("expected a string, found {text}"));
    }
    string_content(text).map(Some)
}

/// Extended JSON wrappers (`{"$oid": ...}`, `{"$date": ...}`, ...) or a plain document.
fn classify_object(text: &str) -> Result<(u8, Option<Cow<'_, str>>), String> {
    // Most objects are plain documents: only a first key starting with "$" can be a wrapper.
    if !text[1..].trim_start().starts_with("\"$") {
        return Ok((kind::DOCUMENT, Some(Cow::Borrowed(text))));
    }
    let members: Members = serde_json::from_str(text).map_err(|error| error.to_string())?;
    let members = members.0;
    let wrapper = members.first().map(|(key, _)| key.as_ref()).unwrap_or("");
    let single = members.len() == 1;
    let raw_text = Some(Cow::Borrowed(text));
    Ok(match (wrapper, single) {
        ("$oid", true) => (kind::OBJECT_ID, unescape(members[0].1)?),
        ("$date", true) => {
            let inner = members[0].1.get().trim();
            if inner.starts_with('"') {
                (kind::DATE_ISO, unescape(members[0].1)?)
            } else if inner.starts_with('{') {
                let long: Members = serde_json::from_str(inner).map_err(|error| error.to_string())?;
                match long.0.first() {
                    Some((key, value)) if key == "$numberLong" => (kind::DATE_MILLIS, unescape(value)?),
                    _ => (kind::DOCUMENT, raw_text),
                }
            } else {
                // Canonical mode's plain millisecond number.
                (kind::DATE_MILLIS, Some(Cow::Owned(inner.to_owned())))
            }
        }
        ("$numberDecimal", true) => (kind::DECIMAL, unescape(members[0].1)?),
        ("$numberDouble", true) => (kind::DOUBLE, unescape(members[0].1)?),
        ("$numberLong", true) => (kind::INT64, unescape(members[0].1)?),
        ("$numberInt", true) => (kind::INT32, unescape(members[0].1)?),
        ("$binary", true) => (kind::BINARY, raw_text),
        ("$uuid", true) => (kind::BINARY, raw_text),
        ("$timestamp", true) => (kind::TIMESTAMP, raw_text),
        ("$regularExpression", true) => (kind::REGEX, raw_text),
        ("$code", true) => (kind::JAVASCRIPT, raw_text),
        ("$code", false) if members.len() == 2 && members[1].0 == "$scope" => (kind::JAVASCRIPT_WITH_SCOPE, raw_text),
        ("$symbol", true) => (kind::SYMBOL, raw_text),
        ("$minKey", true) => (kind::MIN_KEY, raw_text),
        ("$maxKey", true) => (kind::MAX_KEY, raw_text),
        ("$undefined", true) => (kind::UNDEFINED, raw_text),
        ("$dbPointer", true) => (kind::DB_POINTER, raw_text),
        _ => (kind::DOCUMENT, raw_text),
    })
}

/// A nullable UTF-8 column as Arrow's large_utf8 buffers.
struct TextColumn {
    validity: Vec<u8>,
    offsets: Vec<i64>,
    data: Vec<u8>,
    len: usize,
}

impl TextColumn {
    fn new(capacity: usize) -> Self {
        let mut offsets = Vec::with_capacity(capacity + 1);
        offsets.push(0);
        TextColumn {
            validity: Vec::with_capacity(capacity / 8 + 1),
            offsets,
            data: Vec::new(),
            len: 0,
        }
    }

    fn push(&mut self, value: Option<&str>) {
        if self.len % 8 == 0 {
            self.validity.push(0);
        }
        if let Some(text) = value {
            self.data.extend_from_slice(text.as_bytes());
            *self.validity.last_mut().unwrap() |= 1 << (self.len % 8);
        }
        self.offsets.push(self.data.len() as i64);
        self.len += 1;
    }

    /// A document's members as compact JSON, in their order (names re-escaped only if they had escapes).
    fn push_document(&mut self, members: &[(Cow<'_, str>, &RawValue)]) {
        if self.len % 8 == 0 {
            self.validity.push(0);
        }
        let data = &mut self.data;
        data.push(b'{');
        for (index, (name, value)) in members.iter().enumerate() {
            if index > 0 {
                data.push(b',');
            }
            match name {
                Cow::Borrowed(plain) => {
                    data.push(b'"');
                    data.extend_from_slice(plain.as_bytes());
                    data.push(b'"');
                }
                Cow::Owned(unescaped) => {
                    data.extend_from_slice(serde_json::to_string(unescaped).unwrap_or_default().as_bytes())
                }
            }
            data.push(b':');
            data.extend_from_slice(value.get().as_bytes());
        }
        data.push(b'}');
        *self.validity.last_mut().unwrap() |= 1 << (self.len % 8);
        self.offsets.push(self.data.len() as i64);
        self.len += 1;
    }

    fn pad_to(&mut self, len: usize) {
        while self.len < len {
            self.push(None);
        }
    }

    fn into_py<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let offsets: Vec<u8> = self.offsets.iter().flat_map(|offset| offset.to_le_bytes()).collect();
        PyTuple::new(
            py,
            [
                PyBytes::new(py, &self.validity),
                PyBytes::new(py, &offsets),
                PyBytes::new(py, &self.data),
            ],
        )
    }
}

/// A nullable int64 column as Arrow buffers.
struct IntColumn {
    validity: Vec<u8>,
    values: Vec<u8>,
    len: usize,
}

impl IntColumn {
    fn new(capacity: usize) -> Self {
        IntColumn {
            validity: Vec::with_capacity(capacity / 8 + 1),
            values: Vec::with_capacity(capacity * 8),
            len: 0,
        }
    }

    fn push(&mut self, value: Option<i64>) {
        if self.len % 8 == 0 {
            self.validity.push(0);
        }
        if value.is_some() {
            *self.validity.last_mut().unwrap() |= 1 << (self.len % 8);
        }
        self.values.extend_from_slice(&value.unwrap_or(0).to_le_bytes());
        self.len += 1;
    }

    fn into_py<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, [PyBytes::new(py, &self.validity), PyBytes::new(py, &self.values)])
    }
}

/// One top-level field of `fullDocument` across the batch: kinds and texts.
struct FieldColumn {
    kinds: Vec<u8>,
    text: TextColumn,
}

const TEXT_COLUMNS: [&str; 12] = [
    "event_id",
    "resume_token",
    "operation",
    "db",
    "collection",
    "document_key",
    "document_id",
    "lsid",
    "full_document",
    "update_description",
    "full_document_before_change",
    "wall_time",
];
const INT_COLUMNS: [&str; 3] = ["cluster_time_seconds", "cluster_time_increment", "txn_number"];

struct Scanned {
    text: Vec<TextColumn>,
    ints: Vec<IntColumn>,
    wall_time_kind: Vec<u8>,
    field_names: Vec<String>,
    fields: Vec<FieldColumn>,
    errors: Vec<(usize, String)>,
}

fn document_id(document_key: &RawValue) -> Result<Option<&str>, String> {
    let members: Members = serde_json::from_str(document_key.get()).map_err(|error| error.to_string())?;
    Ok(members
        .0
        .into_iter()
        .find(|(key, _)| key == "_id")
        .map(|(_, value)| value.get()))
}

fn integer(raw: &RawValue) -> Result<Option<i64>, String> {
    match classify(raw)? {
        (kind::INT32 | kind::INT64, Some(text)) => text
            .parse::<i64>()
            .map(Some)
            .map_err(|error| format!("{text:?} is not an int64: {error}")),
        (kind::NULL, _) => Ok(None),
        (other, _) => Err(format!("expected an integer, found BSON kind {other}")),
    }
}

struct Row<'a> {
    text: [Option<Cow<'a, str>>; 12],
    ints: [Option<i64>; 3],
    wall_time_kind: u8,
    fields: Vec<(Cow<'a, str>, u8, Option<Cow<'a, str>>)>,
    /// fullDocument's members, written out as compact JSON straight into its column.
    has_document: bool,
    document: Vec<(Cow<'a, str>, &'a RawValue)>,
}

const FULL_DOCUMENT: usize = 8;

fn raw_text(value: Option<&RawValue>) -> Option<Cow<'_, str>> {
    value.map(|value| Cow::Borrowed(value.get()))
}

/// The deepest JSON nesting a scanned event may have: what the encoder can write for the
/// deepest BSON it accepts, Extended JSON wrappers included.
const MAX_JSON_DEPTH: usize = crate::bson_json::MAX_NESTING_DEPTH + crate::bson_json::EXTENDED_JSON_WRAPPER_DEPTH;

/// True when `line` nests objects and arrays deeper than `limit`. serde_json follows raw
/// values without a depth limit (iteratively, so safely), which would let any depth into
/// bronze; this bounds it. Malformed JSON is left for serde_json to reject.
fn nested_deeper_than(line: &[u8], limit: usize) -> bool {
    // Deeper nesting needs more openers than `limit`: a vectorized count rules out nearly every line.
    if count_openers(line) <= limit {
        return false;
    }
    let mut depth = 0usize;
    let mut index = 0;
    while let Some(&byte) = line.get(index) {
        index += 1;
        match byte {
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => index = string_end(line, index),
            _ => {}
        }
    }
    false
}

/// How many bytes of `line` are `{` or `[` (inside strings too). Counted in u8 lanes over
/// chunks short enough not to overflow them, which the compiler turns into SIMD.
fn count_openers(line: &[u8]) -> usize {
    line.chunks(255)
        .map(|chunk| {
            // `[` is 0x5B and `{` 0x7B: no other byte gives 0x7B with bit 5 set.
            let count: u8 = chunk.iter().fold(0u8, |count, &byte| count + u8::from(byte | 0x20 == b'{'));
            usize::from(count)
        })
        .sum()
}

/// The index after the quote that closes the JSON string whose content starts at `index`
/// (or the line's length): eight bytes at a time to the next quote or backslash.
fn string_end(line: &[u8], mut index: usize) -> usize {
    loop {
        while index + 8 <= line.len() {
            let special = quote_or_backslash(u64::from_le_bytes(line[index..index + 8].try_into().unwrap()));
            if special != 0 {
                index += (special.trailing_zeros() / 8) as usize;
                break;
            }
            index += 8;
        }
        match line.get(index) {
            None => return line.len(),
            Some(b'"') => return index + 1,
            Some(b'\\') => index += 2,
            Some(_) => index += 1,
        }
    }
}

/// High bit set in each byte of `word` that is `"` or `\`; the lowest flagged byte is exact.
#[inline(always)]
fn quote_or_backslash(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |value: u64| value.wrapping_sub(ONES) & !value & HIGHS;
    zero_bytes(word ^ (ONES * b'"' as u64)) | zero_bytes(word ^ (ONES * b'\\' as u64))
}

fn scan_event(line: &[u8]) -> Result<Row<'_>, String> {
    if nested_deeper_than(line, MAX_JSON_DEPTH) {
        return Err(format!("nested deeper than {MAX_JSON_DEPTH} levels of JSON (MongoDB's BSON depth limit with Extended JSON's wrappers)"));
    }
    let event: RawEvent = serde_json::from_slice(line).map_err(|error| error.to_string())?;
    let token = event.id.ok_or("missing _id (the resume token)")?;
    let parsed: ResumeToken = serde_json::from_str(token.get()).map_err(|error| format!("_id: {error}"))?;
    let operation = event.operation.ok_or("missing operationType")?;
    let (db, coll) = match event.ns {
        Some(ns) => (ns.db, ns.coll),
        None => (None, None),
    };
    let document_id_text = match event.document_key {
        Some(key) => document_id(key).map_err(|error| format!("documentKey: {error}"))?,
        None => None,
    };
    let (seconds, increment) = match event.cluster_time {
        Some(raw) if raw.get() != "null" => {
            let wrapper: TimestampWrapper =
                serde_json::from_str(raw.get()).map_err(|error| format!("clusterTime: {error}"))?;
            (
                Some(i64::from(wrapper.timestamp.t)),
                Some(i64::from(wrapper.timestamp.i)),
            )
        }
        _ => (None, None),
    };
    let (wall_time_kind, wall_time) = match event.wall_time {
        Some(raw) => classify(raw).map_err(|error| format!("wallTime: {error}"))?,
        None => (kind::ABSENT, None),
    };
    let txn_number = match event.txn_number {
        Some(raw) => integer(raw).map_err(|error| format!("txnNumber: {error}"))?,
        None => None,
    };
    let mut fields = Vec::new();
    let has_document = event.full_document.is_some();
    let document = event.full_document.map(|members| members.0).unwrap_or_default();
    for (name, value) in &document {
        let (value_kind, text) = classify(value).map_err(|error| format!("fullDocument.{name}: {error}"))?;
        fields.push((name.clone(), value_kind, text));
    }
    Ok(Row {
        text: [
            Some(parsed.data),
            Some(Cow::Borrowed(token.get())),
            Some(operation),
            db,
            coll,
            raw_text(event.document_key),
            document_id_text.map(Cow::Borrowed),
            raw_text(event.lsid),
            None,
            raw_text(event.update_description),
            raw_text(event.full_document_before_change),
            wall_time,
        ],
        ints: [seconds, increment, txn_number],
        wall_time_kind,
        fields,
        has_document,
        document,
    })
}

fn scan_lines(lines: &[&[u8]]) -> Scanned {
    let count = lines.len();
    let mut scanned = Scanned {
        text: (0..TEXT_COLUMNS.len()).map(|_| TextColumn::new(count)).collect(),
        ints: (0..INT_COLUMNS.len()).map(|_| IntColumn::new(count)).collect(),
        wall_time_kind: Vec::with_capacity(count),
        field_names: Vec::new(),
        fields: Vec::new(),
        errors: Vec::new(),
    };
    scanned.text[FULL_DOCUMENT]
        .data
        .reserve(lines.iter().map(|line| line.len()).sum());
    let mut field_index: HashMap<String, usize> = HashMap::new();
    for (row_number, line) in lines.iter().enumerate() {
        let row = match scan_event(line) {
            Ok(row) => row,
            Err(error) => {
                scanned.errors.push((row_number, error));
                Row {
                    text: Default::default(),
                    ints: [None; 3],
                    wall_time_kind: kind::ABSENT,
                    fields: Vec::new(),
                    has_document: false,
                    document: Vec::new(),
                }
            }
        };
        for (index, (column, value)) in scanned.text.iter_mut().zip(row.text.iter()).enumerate() {
            if index == FULL_DOCUMENT && row.has_document {
                column.push_document(&row.document);
            } else {
                column.push(value.as_deref());
            }
        }
        for (column, value) in scanned.ints.iter_mut().zip(row.ints.iter()) {
            column.push(*value);
        }
        scanned.wall_time_kind.push(row.wall_time_kind);
        let mut expected = 0;
        for (name, value_kind, text) in row.fields {
            // Documents of one collection mostly list their fields in the same order: try that first.
            let hinted = scanned
                .field_names
                .get(expected)
                .filter(|known| known.as_str() == name.as_ref());
            let index = match hinted
                .map(|_| expected)
                .or_else(|| field_index.get(name.as_ref()).copied())
            {
                Some(index) => index,
                None => {
                    let index = scanned.fields.len();
                    field_index.insert(name.to_string(), index);
                    scanned.field_names.push(name.to_string());
                    scanned.fields.push(FieldColumn {
                        kinds: Vec::with_capacity(count),
                        text: TextColumn::new(count),
                    });
                    index
                }
            };
            expected = index + 1;
            let column = &mut scanned.fields[index];
            // A key repeated in one document keeps its first value, as MongoDB's reads do.
            if column.kinds.len() > row_number {
                continue;
            }
            column.kinds.resize(row_number, kind::ABSENT);
            column.text.pad_to(row_number);
            column.kinds.push(value_kind);
            column.text.push(text.as_deref());
        }
    }
    for column in &mut scanned.fields {
        column.kinds.resize(count, kind::ABSENT);
        column.text.pad_to(count);
    }
    scanned
}

/// scan_change_events(events: bytes | list[bytes]) -> dict
///
/// Change events as relaxed Extended JSON: NDJSON bytes or a list with one event per item.
/// Returns {"count", "text": {name: (validity, offsets, data)}, "int": {name: (validity,
/// values)}, "wall_time_kind": bytes, "fields": [(name, kinds, (validity, offsets, data))],
/// "errors": [(index, message)]}. A row that fails to parse is all nulls and listed in errors.
#[pyfunction]
pub fn scan_change_events<'py>(py: Python<'py>, events: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let holders: Vec<Bound<'py, PyBytes>> = if let Ok(batch) = events.cast::<PyBytes>() {
        vec![batch.clone()]
    } else {
        let list = events
            .cast::<PyList>()
            .map_err(|_| PyValueError::new_err("expected NDJSON bytes or a list of bytes"))?;
        list.iter()
            .map(|item| item.cast_into::<PyBytes>().map_err(PyErr::from))
            .collect::<PyResult<_>>()?
    };
    let lines: Vec<&[u8]> = if events.is_instance_of::<PyBytes>() {
        let batch = holders[0].as_bytes();
        let batch = batch.strip_suffix(b"\n").unwrap_or(batch);
        if batch.is_empty() {
            Vec::new()
        } else {
            batch.split(|&byte| byte == b'\n').collect()
        }
    } else {
        holders.iter().map(|bytes| bytes.as_bytes()).collect()
    };
    let scanned = py.detach(|| scan_lines(&lines));

    let result = PyDict::new(py);
    result.set_item("count", lines.len())?;
    let text = PyDict::new(py);
    for (name, column) in TEXT_COLUMNS.iter().zip(scanned.text) {
        text.set_item(name, column.into_py(py)?)?;
    }
    result.set_item("text", text)?;
    let ints = PyDict::new(py);
    for (name, column) in INT_COLUMNS.iter().zip(scanned.ints) {
        ints.set_item(name, column.into_py(py)?)?;
    }
    result.set_item("int", ints)?;
    result.set_item("wall_time_kind", PyBytes::new(py, &scanned.wall_time_kind))?;
    let fields = PyList::empty(py);
    for (name, column) in scanned.field_names.into_iter().zip(scanned.fields) {
        let item = PyTuple::new(
            py,
            [
                name.into_pyobject(py)?.into_any(),
                PyBytes::new(py, &column.kinds).into_any(),
                column.text.into_py(py)?.into_any(),
            ],
        )?;
        fields.append(item)?;
    }
    result.set_item("fields", fields)?;
    result.set_item("errors", scanned.errors)?;
    Ok(result)
}
