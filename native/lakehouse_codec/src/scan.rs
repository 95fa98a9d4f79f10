//! The consumer side of the contract: change events (relaxed Extended JSON) to Arrow columns.
//!
//! Why native: bronze_writer needs, for every event, the envelope fields, the exact JSON
//! of the payload parts, and each top-level field of `fullDocument` with its BSON type.
//! Polars and Arrow parse JSON vectorized but cast as they go (2.7 read as an integer
//! becomes 2, 8 read as a string becomes "8") and cannot return a value's own JSON,
//! so they cannot tell a type change from a value. This walks each event once with
//! serde_json (borrowing, no tree).
//!
//! Why views: every text column is an Arrow `string_view` column whose values point into one
//! copy of the events' bytes (the joined input), so the payloads, ids and field values are
//! never copied again on their way to Parquet (Polars keeps strings as views too). Only text
//! that is not a slice of its event (an unescaped string, a document rewritten without its
//! whitespace) is written to a second buffer. Every buffer is lent to Python without a copy
//! ([`ScanBuffer`], the buffer protocol) and released when the last Arrow array using it goes.
//!
//! `collect_messages` is the consumer loop's half: it reads confluent-kafka `Message` objects
//! into columns per topic, so the loop makes no Python call per record.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::fmt;
use std::ptr;

use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
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
                while let Some((Name(name), value)) = map.next_entry::<Name<'de>, &'de RawValue>()? {
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor(std::marker::PhantomData))
    }
}

/// A member name, borrowed from the event unless it had escapes (serde's `Cow<str>` always copies).
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for NameVisitor<'a> {
            type Value = Name<'a>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a member name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(name)))
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(name.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, name: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(name)))
            }
        }
        deserializer.deserialize_str(NameVisitor(std::marker::PhantomData))
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

/// Memory behind one Arrow buffer, owned by Rust and lent to Python without a copy.
enum Storage {
    Bytes(Vec<u8>),
    Words(Vec<i64>),
    Views(Vec<[u8; 16]>),
}

/// A read-only buffer (the buffer protocol), for `pyarrow.py_buffer`; freed when Arrow lets go of it.
#[pyclass(frozen, module = "lakehouse_codec")]
pub struct ScanBuffer {
    storage: Storage,
}

impl ScanBuffer {
    fn as_bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Bytes(bytes) => bytes,
            // SAFETY: i64 and [u8; 16] have no padding; the slice covers exactly the vector's items.
            Storage::Words(words) => unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) },
            Storage::Views(views) => unsafe { std::slice::from_raw_parts(views.as_ptr().cast::<u8>(), views.len() * 16) },
        }
    }

    fn wrap(py: Python<'_>, storage: Storage) -> PyResult<Bound<'_, ScanBuffer>> {
        Bound::new(py, ScanBuffer { storage })
    }
}

#[pymethods]
impl ScanBuffer {
    /// # Safety
    /// Called by CPython with a valid `view`; the buffer stays valid while `view.obj` holds this object.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("view is null"));
        }
        if (flags & ffi::PyBUF_WRITABLE) == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err("a scan buffer is read-only"));
        }
        let data = slf.get().as_bytes();
        // SAFETY: `view` is valid (checked above); every field is set before CPython reads it.
        unsafe {
            (*view).buf = data.as_ptr() as *mut c_void;
            (*view).len = data.len() as ffi::Py_ssize_t;
            (*view).readonly = 1;
            (*view).itemsize = 1;
            (*view).format = if (flags & ffi::PyBUF_FORMAT) == ffi::PyBUF_FORMAT {
                c"B".as_ptr() as *mut _
            } else {
                ptr::null_mut()
            };
            (*view).ndim = 1;
            (*view).shape = if (flags & ffi::PyBUF_ND) == ffi::PyBUF_ND { &mut (*view).len } else { ptr::null_mut() };
            (*view).strides =
                if (flags & ffi::PyBUF_STRIDES) == ffi::PyBUF_STRIDES { &mut (*view).itemsize } else { ptr::null_mut() };
            (*view).suboffsets = ptr::null_mut();
            (*view).internal = ptr::null_mut();
            (*view).obj = slf.into_any().into_ptr();
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.as_bytes().len()
    }
}

/// Data buffers are kept below 1 GiB: view offsets are 32-bit.
const BUFFER_LIMIT: usize = 1 << 30;

/// One event's bytes, inside data buffer `buffer` at `start`.
struct Line<'a> {
    bytes: &'a [u8],
    buffer: u32,
    start: usize,
}

impl Line<'_> {
    /// Where `text` is, when it is a slice of this event.
    fn locate(&self, text: &[u8]) -> Option<(u32, u32)> {
        let begin = self.bytes.as_ptr() as usize;
        let at = text.as_ptr() as usize;
        (at >= begin && at + text.len() <= begin + self.bytes.len()).then(|| (self.buffer, (self.start + at - begin) as u32))
    }
}

/// Text the scanner writes itself: the data buffers after the input's.
struct Written {
    first_index: u32,
    buffers: Vec<Vec<u8>>,
}

impl Written {
    fn push(&mut self, text: &[u8]) -> (u32, u32) {
        let full = self.buffers.last().is_none_or(|buffer| buffer.len() + text.len() > BUFFER_LIMIT);
        if full {
            self.buffers.push(Vec::with_capacity(text.len().max(1 << 16)));
        }
        let index = self.buffers.len() - 1;
        let buffer = &mut self.buffers[index];
        let offset = buffer.len() as u32;
        buffer.extend_from_slice(text);
        (self.first_index + index as u32, offset)
    }
}

/// A validity bitmap being built, one bit per row (1: valid).
#[derive(Default)]
struct Validity {
    bits: Vec<u8>,
    len: usize,
    nulls: usize,
}

impl Validity {
    fn push(&mut self, valid: bool) {
        if self.len % 8 == 0 {
            self.bits.push(0);
        }
        if valid {
            *self.bits.last_mut().unwrap() |= 1 << (self.len % 8);
        } else {
            self.nulls += 1;
        }
        self.len += 1;
    }

    /// The bitmap for Python, or None when every row is valid (Arrow needs none then).
    fn into_py(self, py: Python<'_>) -> PyResult<Option<Bound<'_, ScanBuffer>>> {
        if self.nulls == 0 {
            return Ok(None);
        }
        ScanBuffer::wrap(py, Storage::Bytes(self.bits)).map(Some)
    }
}

/// A nullable `string_view` column: 16-byte views (inline up to 12 bytes, else prefix, buffer, offset).
struct ViewColumn {
    views: Vec<[u8; 16]>,
    validity: Validity,
}

impl ViewColumn {
    fn new(capacity: usize) -> Self {
        ViewColumn { views: Vec::with_capacity(capacity), validity: Validity::default() }
    }

    fn len(&self) -> usize {
        self.views.len()
    }

    fn push_null(&mut self) {
        self.views.push([0; 16]);
        self.validity.push(false);
    }

    /// A value: inline when short, else a view of `line` where it is a slice of it, else of a written copy.
    fn push(&mut self, text: &[u8], line: &Line<'_>, written: &mut Written) {
        let mut view = [0u8; 16];
        view[..4].copy_from_slice(&(text.len() as u32).to_le_bytes());
        if text.len() <= 12 {
            view[4..4 + text.len()].copy_from_slice(text);
        } else {
            let (buffer, offset) = line.locate(text).unwrap_or_else(|| written.push(text));
            view[4..8].copy_from_slice(&text[..4]);
            view[8..12].copy_from_slice(&buffer.to_le_bytes());
            view[12..16].copy_from_slice(&offset.to_le_bytes());
        }
        self.views.push(view);
        self.validity.push(true);
    }

    fn push_optional(&mut self, text: Option<&str>, line: &Line<'_>, written: &mut Written) {
        match text {
            Some(text) => self.push(text.as_bytes(), line, written),
            None => self.push_null(),
        }
    }

    fn pad_to(&mut self, len: usize) {
        while self.len() < len {
            self.push_null();
        }
    }

    /// (validity or None, views, null count).
    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        let nulls = self.validity.nulls;
        let validity = self.validity.into_py(py)?;
        let views = ScanBuffer::wrap(py, Storage::Views(self.views))?;
        (validity, views, nulls).into_pyobject(py)
    }
}

/// A nullable int64 column.
struct IntColumn {
    values: Vec<i64>,
    validity: Validity,
}

impl IntColumn {
    fn new(capacity: usize) -> Self {
        IntColumn { values: Vec::with_capacity(capacity), validity: Validity::default() }
    }

    fn push(&mut self, value: Option<i64>) {
        self.values.push(value.unwrap_or(0));
        self.validity.push(value.is_some());
    }

    /// (validity or None, values, null count).
    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        let nulls = self.validity.nulls;
        let validity = self.validity.into_py(py)?;
        let values = ScanBuffer::wrap(py, Storage::Words(self.values))?;
        (validity, values, nulls).into_pyobject(py)
    }
}

/// One top-level field of `fullDocument` across the batch: kinds and texts, and its dates.
struct FieldColumn {
    kinds: Vec<u8>,
    text: ViewColumn,
    dates: Dates,
}

/// A column's date values as UTC microseconds, parsed here so that typing need not parse
/// text (Polars' `str.to_datetime` measured 1 µs per value). Only canonical forms are parsed
/// (see `iso_micros`); if any date of the column is not, the column is not given and
/// typing parses the text itself, so the result never depends on who parsed it.
#[derive(Default)]
struct Dates {
    micros: Option<IntColumn>,
    unparsed: usize,
}

impl Dates {
    /// Record row `row`'s value (its kind and text); rows of other kinds are null.
    fn push(&mut self, row: usize, value_kind: u8, text: Option<&str>) {
        let parsed = match (value_kind, text) {
            (kind::DATE_ISO, Some(text)) => iso_micros(text.as_bytes()),
            (kind::DATE_MILLIS, Some(text)) => millis_micros(text),
            _ => return,
        };
        let column = self.micros.get_or_insert_with(|| IntColumn::new(0));
        while column.values.len() < row {
            column.push(None);
        }
        match parsed {
            Some(value) => column.push(value),
            None => self.unparsed += 1,
        }
    }

    /// (validity, micros, nulls) for `count` rows, or None without dates or with unparsed ones.
    fn into_py(self, py: Python<'_>, count: usize) -> PyResult<Option<Bound<'_, PyTuple>>> {
        match self.micros {
            Some(mut column) if self.unparsed == 0 => {
                while column.values.len() < count {
                    column.push(None);
                }
                column.into_py(py).map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// Delta's timestamp range, 0001-01-01 to 9999-12-31, in milliseconds (bronze_writer.schema).
const MIN_MILLIS: i64 = -62_135_596_800_000;
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// A `$date` in milliseconds: Some(micros), Some(None) outside Delta's range, None if not plain digits.
fn millis_micros(text: &str) -> Option<Option<i64>> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let millis: i64 = text.parse().ok()?;
    Some((MIN_MILLIS..=MAX_MILLIS).contains(&millis).then_some(millis * 1000))
}

fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |value, &byte| byte.is_ascii_digit().then(|| value * 10 + i64::from(byte - b'0')))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` (RFC 3339, what relaxed Extended JSON writes) as
/// UTC microseconds, fractions beyond microseconds cut: Some(Some(micros)), Some(None) for
/// no such date (2023-02-29), None for any other form (typing's parser decides those).
fn iso_micros(text: &[u8]) -> Option<Option<i64>> {
    if text.len() < 20 || text[4] != b'-' || text[7] != b'-' || text[10] != b'T' || text[13] != b':' || text[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(&text[0..4])?, digits(&text[5..7])?, digits(&text[8..10])?);
    let (hour, minute, second) = (digits(&text[11..13])?, digits(&text[14..16])?, digits(&text[17..19])?);
    let mut rest = &text[19..];
    let mut micros = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let length = fraction.iter().take_while(|byte| byte.is_ascii_digit()).count();
        if !(1..=9).contains(&length) {
            return None;
        }
        let kept = length.min(6);
        micros = digits(&fraction[..kept])? * 10i64.pow((6 - kept) as u32);
        rest = &fraction[length..];
    }
    let offset = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            (hours * 3600 + minutes * 60) * if *sign == b'-' { -1 } else { 1 }
        }
        _ => return None,
    };
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) {
        return None;
    }
    if day < 1 || day > month_days[(month - 1) as usize] {
        return Some(None);
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(Some(seconds * 1_000_000 + micros))
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
    text: Vec<ViewColumn>,
    ints: Vec<IntColumn>,
    wall_time_kind: Vec<u8>,
    wall_time_dates: Dates,
    field_names: Vec<String>,
    fields: Vec<FieldColumn>,
    errors: Vec<(usize, String)>,
    written: Written,
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
    /// fullDocument's members, for its column (a view of the event when written compactly).
    has_document: bool,
    document: Vec<(Cow<'a, str>, &'a RawValue)>,
}

const FULL_DOCUMENT: usize = 8;
const WALL_TIME: usize = 11;

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

/// A field of `fullDocument`: its name, BSON kind and text.
type Field<'a> = (Cow<'a, str>, u8, Option<Cow<'a, str>>);

/// One event to a row; its fields go to `fields` (cleared first, reused across rows).
fn scan_event<'a>(line: &'a [u8], fields: &mut Vec<Field<'a>>) -> Result<Row<'a>, String> {
    fields.clear();
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
            (Some(i64::from(wrapper.timestamp.t)), Some(i64::from(wrapper.timestamp.i)))
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
        has_document,
        document,
    })
}

/// The slice of `line` that is the document of these members, when the event wrote it
/// compactly (`{"a":1,"b":2}`, no whitespace, no escaped names): then the column's text is a
/// view of the event itself. None otherwise, and the document is written out.
fn compact_document<'a>(line: &'a [u8], members: &[(Cow<'a, str>, &'a RawValue)]) -> Option<&'a [u8]> {
    let base = line.as_ptr() as usize;
    let offset_of = |text: &str| -> Option<usize> {
        let at = (text.as_ptr() as usize).checked_sub(base)?;
        (at + text.len() <= line.len()).then_some(at)
    };
    let mut start = 0;
    let mut next_name = 0;
    for (index, (name, value)) in members.iter().enumerate() {
        let Cow::Borrowed(name) = name else { return None };
        let at = offset_of(name)?;
        if index == 0 {
            if at < 2 || &line[at - 2..at] != b"{\"" {
                return None;
            }
            start = at - 2;
        } else if at != next_name {
            return None;
        }
        let after_name = at + name.len();
        if line.get(after_name..after_name + 2) != Some(b"\":") || offset_of(value.get())? != after_name + 2 {
            return None;
        }
        let end = after_name + 2 + value.get().len();
        if index + 1 == members.len() {
            return (line.get(end) == Some(&b'}')).then(|| &line[start..=end]);
        }
        if line.get(end..end + 2) != Some(b",\"") {
            return None;
        }
        next_name = end + 2;
    }
    None
}

/// A document's members as compact JSON, in their order (names re-escaped only if they had escapes).
fn write_document(members: &[(Cow<'_, str>, &RawValue)], data: &mut Vec<u8>) {
    data.clear();
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
            Cow::Owned(unescaped) => data.extend_from_slice(serde_json::to_string(unescaped).unwrap_or_default().as_bytes()),
        }
        data.push(b':');
        data.extend_from_slice(value.get().as_bytes());
    }
    data.push(b'}');
}

fn scan_lines(lines: &[Line<'_>], first_written_index: u32) -> Scanned {
    let count = lines.len();
    let mut scanned = Scanned {
        text: (0..TEXT_COLUMNS.len()).map(|_| ViewColumn::new(count)).collect(),
        ints: (0..INT_COLUMNS.len()).map(|_| IntColumn::new(count)).collect(),
        wall_time_kind: Vec::with_capacity(count),
        wall_time_dates: Dates::default(),
        field_names: Vec::new(),
        fields: Vec::new(),
        errors: Vec::new(),
        written: Written { first_index: first_written_index, buffers: Vec::new() },
    };
    let mut field_index: HashMap<String, usize> = HashMap::new();
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut document = Vec::new();
    for (row_number, line) in lines.iter().enumerate() {
        let row = match scan_event(line.bytes, &mut fields) {
            Ok(row) => row,
            Err(error) => {
                scanned.errors.push((row_number, error));
                fields.clear();
                Row {
                    text: Default::default(),
                    ints: [None; 3],
                    wall_time_kind: kind::ABSENT,
                    has_document: false,
                    document: Vec::new(),
                }
            }
        };
        let written = &mut scanned.written;
        for (index, (column, value)) in scanned.text.iter_mut().zip(row.text.iter()).enumerate() {
            if index == FULL_DOCUMENT && row.has_document {
                match compact_document(line.bytes, &row.document) {
                    Some(slice) => column.push(slice, line, written),
                    None => {
                        write_document(&row.document, &mut document);
                        column.push(&document, line, written);
                    }
                }
            } else {
                column.push_optional(value.as_deref(), line, written);
            }
        }
        for (column, value) in scanned.ints.iter_mut().zip(row.ints.iter()) {
            column.push(*value);
        }
        scanned.wall_time_kind.push(row.wall_time_kind);
        scanned.wall_time_dates.push(row_number, row.wall_time_kind, row.text[WALL_TIME].as_deref());
        let mut expected = 0;
        for (name, value_kind, text) in fields.drain(..) {
            // Documents of one collection mostly list their fields in the same order: try that first.
            let hinted = scanned.field_names.get(expected).filter(|known| known.as_str() == name.as_ref());
            let index = match hinted.map(|_| expected).or_else(|| field_index.get(name.as_ref()).copied()) {
                Some(index) => index,
                None => {
                    let index = scanned.fields.len();
                    field_index.insert(name.to_string(), index);
                    scanned.field_names.push(name.to_string());
                    scanned.fields.push(FieldColumn {
                        kinds: Vec::with_capacity(count),
                        text: ViewColumn::new(count),
                        dates: Dates::default(),
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
            column.dates.push(row_number, value_kind, text.as_deref());
            column.text.push_optional(text.as_deref(), line, written);
        }
    }
    for column in &mut scanned.fields {
        column.kinds.resize(count, kind::ABSENT);
        column.text.pad_to(count);
    }
    scanned
}

/// The events as lines in data buffers of at most `BUFFER_LIMIT` bytes (joined: one copy).
fn join_lines(values: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<(u32, usize, usize)>) {
    let mut buffers: Vec<Vec<u8>> = Vec::new();
    let mut placed = Vec::with_capacity(values.len());
    let mut remaining: usize = values.iter().map(|value| value.len()).sum();
    for value in values {
        let fits = buffers.last().is_some_and(|buffer| buffer.len() + value.len() <= BUFFER_LIMIT);
        if !fits {
            buffers.push(Vec::with_capacity(remaining.clamp(value.len(), BUFFER_LIMIT)));
        }
        let index = (buffers.len() - 1) as u32;
        let buffer = buffers.last_mut().unwrap();
        placed.push((index, buffer.len(), value.len()));
        buffer.extend_from_slice(value);
        remaining -= value.len();
    }
    (buffers, placed)
}

/// scan_change_events(events: bytes | list[bytes]) -> dict
///
/// Change events as relaxed Extended JSON: NDJSON bytes or a list with one event per item.
/// Returns {"count", "buffers": [data buffer], "text": {name: column}, "int": {name: column},
/// "wall_time_kind": bytes, "wall_time_micros": dates, "fields": [(name, kinds, column,
/// dates)], "errors": [(index, message)]}. A text column is (validity or None, 16-byte string
/// views into "buffers", null count), an int column (validity or None, int64 values, null
/// count); dates are an int column of UTC microseconds (null for other kinds), or None when
/// the column has no dates or one in a form left to typing. Every buffer supports the buffer
/// protocol. A row that fails to parse is all nulls and listed in errors.
#[pyfunction]
pub fn scan_change_events<'py>(py: Python<'py>, events: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let whole = events.cast::<PyBytes>().ok();
    let holders: Vec<Bound<'py, PyBytes>> = match whole {
        Some(batch) => vec![batch.clone()],
        None => events
            .cast::<PyList>()
            .map_err(|_| PyValueError::new_err("expected NDJSON bytes or a list of bytes"))?
            .iter()
            .map(|item| item.cast_into::<PyBytes>().map_err(PyErr::from))
            .collect::<PyResult<_>>()?,
    };
    let values: Vec<&[u8]> = if whole.is_some() {
        let batch = holders[0].as_bytes();
        let batch = batch.strip_suffix(b"\n").unwrap_or(batch);
        if batch.is_empty() { Vec::new() } else { batch.split(|&byte| byte == b'\n').collect() }
    } else {
        holders.iter().map(|bytes| bytes.as_bytes()).collect()
    };
    let (inputs, scanned) = py.detach(|| {
        let (inputs, placed) = join_lines(&values);
        let lines: Vec<Line<'_>> = placed
            .iter()
            .map(|&(buffer, start, len)| Line { bytes: &inputs[buffer as usize][start..start + len], buffer, start })
            .collect();
        let scanned = scan_lines(&lines, inputs.len() as u32);
        drop(lines);
        (inputs, scanned)
    });

    let mut buffers = Vec::new();
    for buffer in inputs {
        buffers.push(ScanBuffer::wrap(py, Storage::Bytes(buffer))?.into_any());
    }
    scanned_to_py(py, values.len(), buffers, scanned)
}

/// The scan as Python objects (see `scan_change_events`); `buffers`: the input's data buffers.
fn scanned_to_py<'py>(
    py: Python<'py>,
    count: usize,
    buffers: Vec<Bound<'py, PyAny>>,
    scanned: Scanned,
) -> PyResult<Bound<'py, PyDict>> {
    let result = PyDict::new(py);
    result.set_item("count", count)?;
    let all = PyList::new(py, buffers)?;
    for buffer in scanned.written.buffers {
        all.append(ScanBuffer::wrap(py, Storage::Bytes(buffer))?)?;
    }
    result.set_item("buffers", all)?;
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
    result.set_item("wall_time_micros", scanned.wall_time_dates.into_py(py, count)?)?;
    let fields = PyList::empty(py);
    for (name, column) in scanned.field_names.into_iter().zip(scanned.fields) {
        let item = PyTuple::new(
            py,
            [
                name.into_pyobject(py)?.into_any(),
                PyBytes::new(py, &column.kinds).into_any(),
                column.text.into_py(py)?.into_any(),
                column.dates.into_py(py, count)?.into_pyobject(py)?.into_any(),
            ],
        )?;
        fields.append(item)?;
    }
    result.set_item("fields", fields)?;
    result.set_item("errors", scanned.errors)?;
    Ok(result)
}

/// Where one record's value is: its data buffer and bytes (`NO_VALUE` for a tombstone).
#[derive(Clone, Copy)]
struct Span {
    buffer: u32,
    start: u32,
    len: u32,
}

const NO_VALUE: u32 = u32::MAX;

/// One topic's record values of a batch, copied out of the `Message` objects as they are
/// collected (one data buffer per `consume()` call, sized exactly), so no Python object per
/// value outlives the consumer loop's call and the scanner reads them where they are.
#[pyclass(module = "lakehouse_codec")]
pub struct RecordValues {
    buffers: Vec<Py<ScanBuffer>>,
    spans: Vec<Span>,
    bytes: usize,
}

impl RecordValues {
    fn empty() -> Self {
        RecordValues { buffers: Vec::new(), spans: Vec::new(), bytes: 0 }
    }

    /// Add these values (None: a tombstone) as one new data buffer.
    fn push_all(&mut self, py: Python<'_>, values: &[Option<&[u8]>]) -> PyResult<()> {
        let total: usize = values.iter().map(|value| value.map_or(0, <[u8]>::len)).sum();
        let mut data = Vec::with_capacity(total);
        let mut spans = Vec::with_capacity(values.len());
        let mut index = self.buffers.len() as u32;
        for value in values {
            let span = match value {
                None => Span { buffer: NO_VALUE, start: 0, len: 0 },
                Some(bytes) => {
                    if data.len() + bytes.len() > BUFFER_LIMIT {
                        let full = std::mem::replace(&mut data, Vec::with_capacity(total.min(BUFFER_LIMIT)));
                        self.buffers.push(ScanBuffer::wrap(py, Storage::Bytes(full))?.unbind());
                        index += 1;
                    }
                    let start = data.len() as u32;
                    data.extend_from_slice(bytes);
                    Span { buffer: index, start, len: bytes.len() as u32 }
                }
            };
            spans.push(span);
        }
        if !data.is_empty() {
            self.buffers.push(ScanBuffer::wrap(py, Storage::Bytes(data))?.unbind());
        }
        self.spans.extend(spans);
        self.bytes += total;
        Ok(())
    }

    fn slice<'a>(&self, buffers: &[&'a [u8]], span: Span) -> Option<&'a [u8]> {
        (span.buffer != NO_VALUE)
            .then(|| &buffers[span.buffer as usize][span.start as usize..(span.start + span.len) as usize])
    }

    fn data(&self) -> Vec<&[u8]> {
        self.buffers.iter().map(|buffer| buffer.get().as_bytes()).collect()
    }
}

#[pymethods]
impl RecordValues {
    #[new]
    #[pyo3(signature = (values = None))]
    fn new(py: Python<'_>, values: Option<Vec<Option<Vec<u8>>>>) -> PyResult<Self> {
        let mut collected = RecordValues::empty();
        if let Some(values) = values {
            let borrowed: Vec<Option<&[u8]>> = values.iter().map(|value| value.as_deref()).collect();
            collected.push_all(py, &borrowed)?;
        }
        Ok(collected)
    }

    fn __len__(&self) -> usize {
        self.spans.len()
    }

    /// The value bytes of every record (tombstones excluded).
    #[getter]
    fn nbytes(&self) -> usize {
        self.bytes
    }

    /// Record `row`'s value (None: a tombstone), as bytes.
    fn value<'py>(&self, py: Python<'py>, row: usize) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let span = *self.spans.get(row).ok_or_else(|| PyValueError::new_err(format!("no record {row}")))?;
        Ok(self.slice(&self.data(), span).map(|bytes| PyBytes::new(py, bytes)))
    }

    /// Every value, as a list of bytes (None for tombstones).
    fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let data = self.data();
        PyList::new(py, self.spans.iter().map(|&span| self.slice(&data, span).map(|bytes| PyBytes::new(py, bytes))))
    }

    /// Whether any record is a tombstone.
    fn has_tombstones(&self) -> bool {
        self.spans.iter().any(|span| span.buffer == NO_VALUE)
    }

    /// Append another collection's values (their buffers are shared, not copied).
    fn extend(&mut self, py: Python<'_>, other: PyRef<'_, RecordValues>) {
        let offset = self.buffers.len() as u32;
        self.buffers.extend(other.buffers.iter().map(|buffer| buffer.clone_ref(py)));
        self.spans.extend(other.spans.iter().map(|&span| Span {
            buffer: if span.buffer == NO_VALUE { NO_VALUE } else { span.buffer + offset },
            ..span
        }));
        self.bytes += other.bytes;
    }

    /// The values of these rows, in this order, copied into a new collection.
    fn select(&self, py: Python<'_>, rows: Vec<usize>) -> PyResult<RecordValues> {
        let data = self.data();
        let mut chosen = Vec::with_capacity(rows.len());
        for row in rows {
            let span = *self.spans.get(row).ok_or_else(|| PyValueError::new_err(format!("no record {row}")))?;
            chosen.push(self.slice(&data, span));
        }
        let mut selected = RecordValues::empty();
        selected.push_all(py, &chosen)?;
        Ok(selected)
    }
}

/// scan_record_values(values: RecordValues) -> dict
///
/// `scan_change_events` over collected values, read where they are: the text columns' views
/// point into the collection's own buffers (listed first in "buffers"). Every value must be
/// present (tombstones take `scan_change_events` with their stand-in events).
#[pyfunction]
pub fn scan_record_values<'py>(py: Python<'py>, values: PyRef<'py, RecordValues>) -> PyResult<Bound<'py, PyDict>> {
    if values.has_tombstones() {
        return Err(PyValueError::new_err("tombstones cannot be scanned; pass their stand-in events"));
    }
    let data = values.data();
    let spans = &values.spans;
    let scanned = py.detach(|| {
        let lines: Vec<Line<'_>> = spans
            .iter()
            .map(|span| Line {
                bytes: &data[span.buffer as usize][span.start as usize..(span.start + span.len) as usize],
                buffer: span.buffer,
                start: span.start as usize,
            })
            .collect();
        scan_lines(&lines, data.len() as u32)
    });
    let buffers: Vec<Bound<'py, PyAny>> = values.buffers.iter().map(|buffer| buffer.bind(py).clone().into_any()).collect();
    scanned_to_py(py, spans.len(), buffers, scanned)
}

/// One topic's records as `collect_messages` returns them.
struct Collected<'py> {
    topic: Bound<'py, PyString>,
    values: Vec<Option<Bound<'py, PyBytes>>>,
    keys: Bound<'py, PyList>,
    headers: Bound<'py, PyList>,
    partitions: Vec<u8>,
    offsets: Vec<u8>,
    timestamps: Vec<u8>,
    sizes: Vec<u8>,
    formats: Vec<u8>,
}

/// collect_messages(messages, json_headers, bson_headers) -> (dict, list[int])
///
/// confluent-kafka `Message` objects to columns per topic, in their order: {topic: (values
/// (RecordValues), keys, headers, partitions int32, offsets int64, timestamps int64, value
/// sizes int64, formats uint8)} (numbers as little-endian bytes), and the positions of the
/// messages that carry an error, which are left out. A record whose first two headers are
/// `json_headers` or `bson_headers` has format 1 or 2 and keeps that shared tuple as its
/// headers (a tombstone keeps its own: its event id is in them); any other has format 0 and
/// keeps its own headers as a tuple (None without headers), for the contract check.
#[pyfunction]
pub fn collect_messages<'py>(
    py: Python<'py>,
    messages: &Bound<'py, PyList>,
    json_headers: &Bound<'py, PyTuple>,
    bson_headers: &Bound<'py, PyTuple>,
) -> PyResult<(Bound<'py, PyDict>, Vec<usize>)> {
    let prefixes = [(1u8, json_headers), (2u8, bson_headers)];
    let mut groups: Vec<Collected<'py>> = Vec::new();
    let mut errors = Vec::new();
    let mut current = usize::MAX;
    let count = messages.len();
    for (position, message) in messages.iter().enumerate() {
        if !message.call_method0(intern!(py, "error"))?.is_none() {
            errors.push(position);
            continue;
        }
        let topic = message.call_method0(intern!(py, "topic"))?.cast_into::<PyString>()?;
        if current == usize::MAX || groups[current].topic.to_str()? != topic.to_str()? {
            let name = topic.to_str()?;
            let mut found = None;
            for (index, group) in groups.iter().enumerate() {
                if group.topic.to_str()? == name {
                    found = Some(index);
                }
            }
            current = match found {
                Some(index) => index,
                None => {
                    groups.push(Collected {
                        topic: topic.clone(),
                        values: Vec::with_capacity(count),
                        keys: PyList::empty(py),
                        headers: PyList::empty(py),
                        partitions: Vec::with_capacity(count * 4),
                        offsets: Vec::with_capacity(count * 8),
                        timestamps: Vec::with_capacity(count * 8),
                        sizes: Vec::with_capacity(count * 8),
                        formats: Vec::with_capacity(count),
                    });
                    groups.len() - 1
                }
            };
        }
        let group = &mut groups[current];
        let partition: i32 = message.call_method0(intern!(py, "partition"))?.extract()?;
        let offset: i64 = message.call_method0(intern!(py, "offset"))?.extract()?;
        let (_kind, timestamp): (i64, i64) = message.call_method0(intern!(py, "timestamp"))?.extract()?;
        let value = message.call_method0(intern!(py, "value"))?;
        let tombstone = value.is_none();
        let value = if tombstone { None } else { Some(value.cast_into::<PyBytes>()?) };
        let size = value.as_ref().map_or(0, |bytes| bytes.as_bytes().len()) as i64;
        let headers = message.call_method0(intern!(py, "headers"))?;
        let mut format = 0u8;
        let mut kept = None;
        if let Ok(list) = headers.cast::<PyList>() {
            if list.len() >= 2 {
                let (first, second) = (list.get_item(0)?, list.get_item(1)?);
                for (code, prefix) in prefixes {
                    if first.eq(prefix.get_item(0)?)? && second.eq(prefix.get_item(1)?)? {
                        format = code;
                        if !tombstone {
                            kept = Some(prefix.clone().into_any());
                        }
                        break;
                    }
                }
            }
            if kept.is_none() && !list.is_empty() {
                kept = Some(PyTuple::new(py, list)?.into_any());
            }
        }
        group.partitions.extend_from_slice(&partition.to_le_bytes());
        group.offsets.extend_from_slice(&offset.to_le_bytes());
        group.timestamps.extend_from_slice(&timestamp.to_le_bytes());
        group.sizes.extend_from_slice(&size.to_le_bytes());
        group.formats.push(format);
        group.values.push(value);
        group.keys.append(message.call_method0(intern!(py, "key"))?)?;
        group.headers.append(kept)?;
    }
    let result = PyDict::new(py);
    for group in groups {
        let mut values = RecordValues::empty();
        let borrowed: Vec<Option<&[u8]>> = group.values.iter().map(|value| value.as_ref().map(|bytes| bytes.as_bytes())).collect();
        values.push_all(py, &borrowed)?;
        let columns = (
            Bound::new(py, values)?,
            group.keys,
            group.headers,
            PyBytes::new(py, &group.partitions),
            PyBytes::new(py, &group.offsets),
            PyBytes::new(py, &group.timestamps),
            PyBytes::new(py, &group.sizes),
            PyBytes::new(py, &group.formats),
        );
        result.set_item(group.topic, columns)?;
    }
    Ok((result, errors))
}
