//! One BSON document to relaxed Extended JSON, in one pass and without recursion.
//!
//! Why this shape: every published and landed event goes through here, so the walk
//! validates and writes in the same pass (UTF-8 is checked while strings are escaped,
//! eight bytes at a time), writes straight into the caller's buffer, and keeps the
//! open documents on an explicit stack bounded by [`MAX_NESTING_DEPTH`]: input nested
//! deeper is rejected, never followed into a stack overflow.
//!
//! Validation follows pymongo's decoder (`bson.decode`): lengths must agree with the
//! bytes they frame (documents, strings, binary, code with scope), booleans are 0 or 1,
//! names and strings are UTF-8 (array keys are skipped unread, as pymongo does).

use base64::Engine;

pub type ConvertResult<T> = Result<T, String>;

/// The deepest nesting accepted, counting the event itself as level 1 and every embedded
/// document or array as one more (a code-with-scope value counts as two: its wrapper and
/// its scope). 200 is MongoDB's own hard limit for any BSON it handles (`maxBSONDepth`,
/// `BSONDepth::kDefaultMaxAllowableDepth`); stored documents may nest 180 levels (20 fewer,
/// kept for the server's own wrappers) and a change event adds at most two more
/// (`updateDescription.updatedFields.<path>`), so no event MongoDB emits is refused.
/// MongoDB's manual promises 100 levels; this bound is the server's actual one.
pub const MAX_NESTING_DEPTH: usize = 200;

/// Extended JSON wrappers nest up to this many objects inside a value's document
/// (`{"$dbPointer":{"$ref":..,"$id":{"$oid":..}}}`): the JSON of an accepted event nests
/// at most `MAX_NESTING_DEPTH + EXTENDED_JSON_WRAPPER_DEPTH` levels.
pub const EXTENDED_JSON_WRAPPER_DEPTH: usize = 3;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// JSON's escape for each byte: 0 copies it, `u` writes `\u00XX`, anything else `\<letter>`.
static ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// "00" to "99", for dates.
static TWO_DIGITS: [u8; 200] = {
    let mut table = [0u8; 200];
    let mut value = 0;
    while value < 100 {
        table[2 * value] = b'0' + (value / 10) as u8;
        table[2 * value + 1] = b'0' + (value % 10) as u8;
        value += 1;
    }
    table
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `word` that is zero; the lowest flagged byte is exact.
#[inline(always)]
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// Flags the bytes JSON must escape: control characters (NUL included), `"` and `\`.
#[inline(always)]
fn escape_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES * 0x20) & !word & HIGHS
        | zero_bytes(word ^ (ONES * b'"' as u64))
        | zero_bytes(word ^ (ONES * b'\\' as u64))
}

#[inline(always)]
fn word_at(bytes: &[u8], index: usize) -> u64 {
    u64::from_le_bytes(bytes[index..index + 8].try_into().unwrap())
}

#[inline]
fn write_escape(out: &mut Vec<u8>, byte: u8, escape: u8) {
    if escape == b'u' {
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX_DIGITS[(byte >> 4) as usize],
            HEX_DIGITS[(byte & 0xf) as usize],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', escape]);
    }
}

fn utf8_error(error: std::str::Utf8Error) -> String {
    format!("invalid UTF-8: {error}")
}

/// The index of the first byte in `text` that JSON must escape or that is not ASCII
/// (NUL included), or `text.len()`: sixteen bytes at a time where SSE2 is (every x86_64).
#[inline(always)]
fn first_special_byte(text: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if text.len() >= 16 {
        return first_special_byte_sse2(text);
    }
    let mut index = 0;
    while index + 8 <= text.len() {
        let word = word_at(text, index);
        let special = escape_bytes(word) | word & HIGHS;
        if special != 0 {
            return index + (special.trailing_zeros() / 8) as usize;
        }
        index += 8;
    }
    while index < text.len() {
        let byte = text[index];
        if byte >= 0x80 || ESCAPES[byte as usize] != 0 {
            return index;
        }
        index += 1;
    }
    text.len()
}

/// `first_special_byte` for at least 16 bytes; the last chunk overlaps the one before it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn first_special_byte_sse2(text: &[u8]) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // Bit i set when byte i of the 16 at `start` is special.
    let special_bits = |start: usize| -> u32 {
        let chunk = &text[start..start + 16];
        // SAFETY: `chunk` holds exactly the 16 bytes read (the slice above is bounds-checked);
        // SSE2 is part of the x86_64 baseline.
        unsafe {
            let bytes = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            // A signed compare: bytes from 0x80 up are negative, so this flags non-ASCII too.
            let control_or_high = _mm_cmplt_epi8(bytes, _mm_set1_epi8(0x20));
            let quote = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
            _mm_movemask_epi8(_mm_or_si128(control_or_high, _mm_or_si128(quote, backslash))) as u32
        }
    };
    let mut index = 0;
    while index + 16 <= text.len() {
        let bits = special_bits(index);
        if bits != 0 {
            return index + bits.trailing_zeros() as usize;
        }
        index += 16;
    }
    if index == text.len() {
        return index;
    }
    let start = text.len() - 16;
    let bits = special_bits(start) >> (index - start) << (index - start);
    if bits != 0 {
        start + bits.trailing_zeros() as usize
    } else {
        text.len()
    }
}

/// Writes `text` as a JSON string, checking its UTF-8 on the way.
fn write_json_text(out: &mut Vec<u8>, text: &[u8]) -> ConvertResult<()> {
    write_string(out, text, text.len())
}

/// Appends `text[..length]`; when `text` runs on for 16 bytes, copies those (a fixed-size
/// move, not a `memcpy` call) and cuts back: most names and strings are that short.
#[inline(always)]
fn append_prefix(out: &mut Vec<u8>, text: &[u8], length: usize) {
    if length <= 16 && text.len() >= 16 {
        let start = out.len();
        out.extend_from_slice(&text[..16]);
        out.truncate(start + length);
    } else {
        out.extend_from_slice(&text[..length]);
    }
}

/// Writes the BSON name at the start of `text` (which runs on to its document's end) as
/// `"name":`; returns the name's length.
#[inline(always)]
fn write_name(out: &mut Vec<u8>, text: &[u8]) -> ConvertResult<usize> {
    let special = first_special_byte(text);
    if text.get(special) == Some(&0) {
        out.reserve(special + 3);
        out.push(b'"');
        append_prefix(out, text, special);
        out.extend_from_slice(b"\":");
        return Ok(special);
    }
    let length = write_escaped_text::<true>(out, text, special)?;
    out.push(b':');
    Ok(length)
}

/// Writes the string of `length` bytes at the start of `text` (which may run on past it).
#[inline(always)]
fn write_string(out: &mut Vec<u8>, text: &[u8], length: usize) -> ConvertResult<()> {
    let string = &text[..length];
    let special = first_special_byte(string);
    if special == length {
        out.reserve(length + 2);
        out.push(b'"');
        append_prefix(out, text, length);
        out.push(b'"');
        return Ok(());
    }
    write_escaped_text::<false>(out, string, special).map(drop)
}

/// Writes a name (`TERMINATED`: it ends at the first NUL of `text`) or a string that needs
/// escapes or holds non-ASCII characters, from `index` on; returns its length.
#[inline(never)]
fn write_escaped_text<const TERMINATED: bool>(out: &mut Vec<u8>, text: &[u8], mut index: usize) -> ConvertResult<usize> {
    out.push(b'"');
    let mut copied = 0;
    let mut ascii = true;
    loop {
        while index + 8 <= text.len() {
            let word = word_at(text, index);
            let attention = escape_bytes(word) | if ascii { word & HIGHS } else { 0 };
            if attention != 0 {
                index += (attention.trailing_zeros() / 8) as usize;
                break;
            }
            index += 8;
        }
        let Some(&byte) = text.get(index) else {
            if TERMINATED {
                return Err("unterminated name".to_owned());
            }
            break;
        };
        if TERMINATED && byte == 0 {
            break;
        }
        match ESCAPES[byte as usize] {
            0 => {
                if ascii && byte >= 0x80 {
                    // Validate the rest at once; from here on only escapes matter.
                    let rest = &text[index..];
                    let rest = if TERMINATED {
                        let length = memchr::memchr(0, rest).ok_or("unterminated name")?;
                        &rest[..length]
                    } else {
                        rest
                    };
                    std::str::from_utf8(rest).map_err(utf8_error)?;
                    ascii = false;
                }
                index += 1;
            }
            escape => {
                out.extend_from_slice(&text[copied..index]);
                write_escape(out, byte, escape);
                index += 1;
                copied = index;
            }
        }
    }
    out.extend_from_slice(&text[copied..index]);
    out.push(b'"');
    Ok(index)
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

#[inline]
fn write_i64(out: &mut Vec<u8>, value: i64) {
    let mut buffer = itoa::Buffer::new();
    out.extend_from_slice(buffer.format(value).as_bytes());
}

fn write_object_id(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut text = [0u8; 35];
    text[..9].copy_from_slice(br#"{"$oid":""#);
    for (index, &byte) in bytes.iter().take(12).enumerate() {
        text[9 + 2 * index] = HEX_DIGITS[(byte >> 4) as usize];
        text[10 + 2 * index] = HEX_DIGITS[(byte & 0xf) as usize];
    }
    text[33..].copy_from_slice(b"\"}");
    out.extend_from_slice(&text);
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
    let two = |value: i64| {
        let index = 2 * value as usize;
        [TWO_DIGITS[index], TWO_DIGITS[index + 1]]
    };
    let mut text = *br#"{"$date":"YYYY-MM-DDTHH:MM:SS.mmmZ"}"#;
    text[10..12].copy_from_slice(&two(year / 100));
    text[12..14].copy_from_slice(&two(year % 100));
    text[15..17].copy_from_slice(&two(month));
    text[18..20].copy_from_slice(&two(day));
    text[21..23].copy_from_slice(&two(millis_of_day / 3_600_000));
    text[24..26].copy_from_slice(&two(millis_of_day / 60_000 % 60));
    text[27..29].copy_from_slice(&two(millis_of_day / 1000 % 60));
    let millis = millis_of_day % 1000;
    text[30] = b'0' + (millis / 100) as u8;
    text[31..33].copy_from_slice(&two(millis % 100));
    out.extend_from_slice(&text);
}

/// A Decimal128's string form as the decimal128 specification (and MongoDB) writes it.
/// Non-canonical encodings (a coefficient above 10^34 - 1) read as zero, as the
/// specification says.
fn write_decimal128(out: &mut Vec<u8>, bytes: [u8; 16]) {
    const MAX_COEFFICIENT: u128 = 9_999_999_999_999_999_999_999_999_999_999_999;
    const EXPONENT_BIAS: i32 = 6176;
    let bits = u128::from_le_bytes(bytes);
    let negative = bits >> 127 == 1;
    out.extend_from_slice(br#"{"$numberDecimal":""#);
    if (bits >> 123) & 0xf == 0xf {
        // NaN has no sign in MongoDB's form.
        if (bits >> 122) & 1 == 1 {
            out.extend_from_slice(b"NaN");
        } else {
            out.extend_from_slice(if negative { b"-Infinity" as &[u8] } else { b"Infinity" });
        }
        out.extend_from_slice(b"\"}");
        return;
    }
    let (biased_exponent, coefficient) = if (bits >> 125) & 0b11 == 0b11 {
        // The "11" form implies a coefficient of at least 2^113: never canonical.
        (((bits >> 111) & 0x3fff) as i32, 0)
    } else {
        let coefficient = bits & ((1u128 << 113) - 1);
        (((bits >> 113) & 0x3fff) as i32, if coefficient > MAX_COEFFICIENT { 0 } else { coefficient })
    };
    let exponent = biased_exponent - EXPONENT_BIAS;
    if negative {
        out.push(b'-');
    }
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(coefficient).as_bytes();
    let adjusted = exponent + digits.len() as i32 - 1;
    if exponent <= 0 && adjusted >= -6 {
        if exponent == 0 {
            out.extend_from_slice(digits);
        } else {
            let fraction_digits = exponent.unsigned_abs() as usize;
            if fraction_digits >= digits.len() {
                out.extend_from_slice(b"0.");
                out.resize(out.len() + fraction_digits - digits.len(), b'0');
                out.extend_from_slice(digits);
            } else {
                let (whole, fraction) = digits.split_at(digits.len() - fraction_digits);
                out.extend_from_slice(whole);
                out.push(b'.');
                out.extend_from_slice(fraction);
            }
        }
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'E');
        if adjusted > 0 {
            out.push(b'+');
        }
        write_i64(out, i64::from(adjusted));
    }
    out.extend_from_slice(b"\"}");
}

fn write_binary(out: &mut Vec<u8>, subtype: u8, payload: &[u8]) {
    out.extend_from_slice(br#"{"$binary":{"base64":""#);
    let start = out.len();
    let encoded = base64::encoded_len(payload.len(), true).unwrap_or(0);
    out.resize(start + encoded, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(payload, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.extend_from_slice(br#"","subType":""#);
    out.extend_from_slice(&[HEX_DIGITS[(subtype >> 4) as usize], HEX_DIGITS[(subtype & 0xf) as usize]]);
    out.extend_from_slice(b"\"}}");
}

fn truncated(position: usize) -> String {
    format!("truncated BSON at byte {position}")
}

/// `count` bytes at `position`, all before `limit`.
#[inline(always)]
fn bytes_at(bytes: &[u8], position: usize, count: usize, limit: usize) -> ConvertResult<&[u8]> {
    match position.checked_add(count) {
        Some(end) if end <= limit => Ok(&bytes[position..end]),
        _ => Err(truncated(position)),
    }
}

#[inline(always)]
fn i32_at(bytes: &[u8], position: usize, limit: usize) -> ConvertResult<i32> {
    Ok(i32::from_le_bytes(bytes_at(bytes, position, 4, limit)?.try_into().unwrap()))
}

#[inline(always)]
fn u64_at(bytes: &[u8], position: usize, limit: usize) -> ConvertResult<u64> {
    Ok(u64::from_le_bytes(bytes_at(bytes, position, 8, limit)?.try_into().unwrap()))
}

/// A BSON string at `position` (int32 length with the NUL, bytes, NUL): its bytes, unchecked.
#[inline(always)]
fn string_at(bytes: &[u8], position: usize, limit: usize) -> ConvertResult<&[u8]> {
    let length = i32_at(bytes, position, limit)?;
    if length < 1 {
        return Err(format!("invalid string length {length} at byte {position}"));
    }
    let body = bytes_at(bytes, position + 4, length as usize, limit)?;
    let (&last, text) = body.split_last().ok_or_else(|| truncated(position))?;
    if last != 0 {
        return Err(format!("string at byte {position} is not NUL-terminated"));
    }
    Ok(text)
}

/// The length of an embedded document (or scope) at `position`, checked against its frame.
#[inline(always)]
fn document_length_at(bytes: &[u8], position: usize, limit: usize) -> ConvertResult<usize> {
    let length = i32_at(bytes, position, limit)?;
    if length < 5 {
        return Err(format!("invalid document length {length} at byte {position}"));
    }
    let length = length as usize;
    if position + length > limit {
        return Err(format!("document at byte {position} overruns its parent"));
    }
    if bytes[position + length - 1] != 0 {
        return Err(format!("document at byte {position} is not NUL-terminated"));
    }
    Ok(length)
}

/// The position after the NUL of the name at `position` (before `limit`).
#[inline(always)]
fn skip_name(bytes: &[u8], position: usize, limit: usize) -> ConvertResult<usize> {
    let name = &bytes[position..limit];
    match name.iter().position(|&byte| byte == 0) {
        Some(length) => Ok(position + length + 1),
        None => Err(format!("unterminated name at byte {position}")),
    }
}

/// A regular expression's options in the alphabetical order Extended JSON prescribes.
fn sorted_options(options: &[u8]) -> ConvertResult<String> {
    let mut options: Vec<char> = std::str::from_utf8(options).map_err(utf8_error)?.chars().collect();
    options.sort_unstable();
    Ok(options.into_iter().collect())
}

fn too_deep() -> String {
    format!("nested deeper than {MAX_NESTING_DEPTH} levels (MongoDB's BSON depth limit)")
}

/// What encloses the values being written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Container {
    Document,
    Array,
    /// The scope of a code-with-scope value: closing it closes the wrapper too.
    CodeScope,
}

impl Container {
    fn levels(self) -> usize {
        if self == Container::CodeScope {
            2
        } else {
            1
        }
    }
}

/// A container left open while a nested one is written.
struct Frame {
    end: usize,
    container: Container,
}

/// Top-level fields of a change event noted during its conversion (no second pass).
#[derive(Default)]
pub struct EventFields<'a> {
    /// `_id`, the resume token document.
    pub token: Option<&'a [u8]>,
    pub operation: Option<&'a [u8]>,
    /// `ns`, a document.
    pub namespace: Option<&'a [u8]>,
    /// Where `documentKey`'s JSON lies in the output.
    pub document_key_json: Option<(usize, usize)>,
    pub cluster_time: Option<(u32, u32)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Noted {
    Token,
    Operation,
    Namespace,
    DocumentKey,
    ClusterTime,
}

fn noted_field(name: &[u8]) -> Option<Noted> {
    match name {
        b"_id" => Some(Noted::Token),
        b"operationType" => Some(Noted::Operation),
        b"ns" => Some(Noted::Namespace),
        b"documentKey" => Some(Noted::DocumentKey),
        b"clusterTime" => Some(Noted::ClusterTime),
        _ => None,
    }
}

/// Converts documents, reusing its stack from one document to the next.
#[derive(Default)]
pub struct JsonWriter {
    stack: Vec<Frame>,
}

impl JsonWriter {
    /// Appends the relaxed Extended JSON of one whole BSON document to `out`.
    pub fn write_document(&mut self, out: &mut Vec<u8>, bytes: &[u8]) -> ConvertResult<()> {
        self.write(out, bytes, None)
    }

    /// Like `write_document` for a change event, noting its top-level contract fields.
    pub fn write_event<'a>(&mut self, out: &mut Vec<u8>, bytes: &'a [u8], fields: &mut EventFields<'a>) -> ConvertResult<()> {
        self.write(out, bytes, Some(fields))
    }

    fn write<'a>(&mut self, out: &mut Vec<u8>, bytes: &'a [u8], mut fields: Option<&mut EventFields<'a>>) -> ConvertResult<()> {
        let declared = i32_at(bytes, 0, bytes.len()).map_err(|_| "invalid BSON document length".to_owned())?;
        if declared < 5 || declared as usize != bytes.len() {
            return Err("invalid BSON document length".to_owned());
        }
        if bytes[bytes.len() - 1] != 0 {
            return Err("BSON document is not NUL-terminated".to_owned());
        }
        out.reserve(bytes.len() + bytes.len() / 2);
        let stack = &mut self.stack;
        stack.clear();
        let mut depth = 1;
        let mut position = 4;
        // The current container ends with the NUL at `end`; its values lie before it.
        let mut end = bytes.len() - 1;
        let mut container = Container::Document;
        let mut first = true;
        let mut document_key_start: Option<usize> = None;
        out.push(b'{');
        loop {
            if position >= end {
                match container {
                    Container::Document => out.push(b'}'),
                    Container::Array => out.push(b']'),
                    Container::CodeScope => out.extend_from_slice(b"}}"),
                }
                depth -= container.levels();
                let Some(parent) = stack.pop() else { break };
                if depth == 1 {
                    if let (Some(start), Some(fields)) = (document_key_start.take(), fields.as_deref_mut()) {
                        fields.document_key_json = Some((start, out.len()));
                    }
                }
                position = end + 1;
                end = parent.end;
                container = parent.container;
                first = false;
                continue;
            }
            let element_type = bytes[position];
            let name_start = position + 1;
            if !first {
                out.push(b',');
            }
            first = false;
            if container == Container::Array {
                // Array keys are "0", "1", ...: JSON drops them, and pymongo skips them unread.
                position = skip_name(bytes, name_start, end)?;
            } else {
                position = name_start + write_name(out, &bytes[name_start..end])? + 1;
            }
            let noted = match fields {
                Some(_) if depth == 1 => noted_field(&bytes[name_start..position - 1]),
                _ => None,
            };
            match element_type {
                0x01 => {
                    write_f64(out, f64::from_bits(u64_at(bytes, position, end)?));
                    position += 8;
                }
                0x02 => {
                    let text = string_at(bytes, position, end)?;
                    write_string(out, &bytes[position + 4..end], text.len())?;
                    if noted == Some(Noted::Operation) {
                        if let Some(fields) = fields.as_deref_mut() {
                            fields.operation = Some(text);
                        }
                    }
                    position += 4 + text.len() + 1;
                }
                0x03 | 0x04 => {
                    let length = document_length_at(bytes, position, end)?;
                    if depth + 1 > MAX_NESTING_DEPTH {
                        return Err(too_deep());
                    }
                    if let (Some(noted), Some(fields)) = (noted, fields.as_deref_mut()) {
                        if element_type == 0x03 {
                            let document = &bytes[position..position + length];
                            match noted {
                                Noted::Token => fields.token = Some(document),
                                Noted::Namespace => fields.namespace = Some(document),
                                Noted::DocumentKey => document_key_start = Some(out.len()),
                                Noted::Operation | Noted::ClusterTime => {}
                            }
                        }
                    }
                    stack.push(Frame { end, container });
                    depth += 1;
                    end = position + length - 1;
                    position += 4;
                    first = true;
                    if element_type == 0x03 {
                        container = Container::Document;
                        out.push(b'{');
                    } else {
                        container = Container::Array;
                        out.push(b'[');
                    }
                }
                0x05 => {
                    let length = i32_at(bytes, position, end)?;
                    if length < 0 {
                        return Err(format!("invalid binary length {length} at byte {position}"));
                    }
                    let header = bytes_at(bytes, position, 5, end)?;
                    let subtype = header[4];
                    let mut payload = bytes_at(bytes, position + 5, length as usize, end)?;
                    // Subtype 2 (old binary) repeats the payload's length inside it.
                    if subtype == 2 {
                        let inner = payload.get(..4).map(|inner| i32::from_le_bytes(inner.try_into().unwrap()));
                        if inner != Some(length - 4) {
                            return Err(format!("binary subtype 2 at byte {position}: inner length disagrees with the payload"));
                        }
                        payload = &payload[4..];
                    }
                    write_binary(out, subtype, payload);
                    position += 5 + length as usize;
                }
                0x06 => out.extend_from_slice(br#"{"$undefined":true}"#),
                0x07 => {
                    write_object_id(out, bytes_at(bytes, position, 12, end)?);
                    position += 12;
                }
                0x08 => {
                    match bytes_at(bytes, position, 1, end)?[0] {
                        0 => out.extend_from_slice(b"false"),
                        1 => out.extend_from_slice(b"true"),
                        other => return Err(format!("invalid boolean value {other} at byte {position}")),
                    }
                    position += 1;
                }
                0x09 => {
                    write_datetime(out, u64_at(bytes, position, end)? as i64);
                    position += 8;
                }
                0x0A => out.extend_from_slice(b"null"),
                0x0B => {
                    let pattern_end = skip_name(bytes, position, end)?;
                    let options_end = skip_name(bytes, pattern_end, end)?;
                    let pattern = &bytes[position..pattern_end - 1];
                    let options = sorted_options(&bytes[pattern_end..options_end - 1])?;
                    out.extend_from_slice(br#"{"$regularExpression":{"pattern":"#);
                    write_json_text(out, pattern)?;
                    out.extend_from_slice(br#","options":"#);
                    write_json_text(out, options.as_bytes())?;
                    out.extend_from_slice(b"}}");
                    position = options_end;
                }
                0x0C => {
                    let namespace = string_at(bytes, position, end)?;
                    let id_position = position + 4 + namespace.len() + 1;
                    let id = bytes_at(bytes, id_position, 12, end)?;
                    out.extend_from_slice(br#"{"$dbPointer":{"$ref":"#);
                    write_json_text(out, namespace)?;
                    out.extend_from_slice(br#","$id":"#);
                    write_object_id(out, id);
                    out.extend_from_slice(b"}}");
                    position = id_position + 12;
                }
                0x0D | 0x0E => {
                    let text = string_at(bytes, position, end)?;
                    out.extend_from_slice(if element_type == 0x0D { br#"{"$code":"# as &[u8] } else { br#"{"$symbol":"# });
                    write_json_text(out, text)?;
                    out.push(b'}');
                    position += 4 + text.len() + 1;
                }
                0x0F => {
                    // int32 total length, the code (a string), the scope (a document).
                    let total = i32_at(bytes, position, end)?;
                    let frame_end = match usize::try_from(total) {
                        Ok(total) if total >= 14 && position + total <= end => position + total,
                        _ => return Err(format!("invalid code-with-scope length {total} at byte {position}")),
                    };
                    let code = string_at(bytes, position + 4, frame_end)?;
                    let scope = position + 4 + 4 + code.len() + 1;
                    let scope_length = document_length_at(bytes, scope, frame_end)?;
                    if scope + scope_length != frame_end {
                        return Err(format!("code-with-scope at byte {position}: total length disagrees with its parts"));
                    }
                    if depth + 2 > MAX_NESTING_DEPTH {
                        return Err(too_deep());
                    }
                    out.extend_from_slice(br#"{"$code":"#);
                    write_json_text(out, code)?;
                    out.extend_from_slice(br#","$scope":{"#);
                    stack.push(Frame { end, container });
                    depth += 2;
                    end = frame_end - 1;
                    position = scope + 4;
                    first = true;
                    container = Container::CodeScope;
                }
                0x10 => {
                    write_i64(out, i64::from(i32_at(bytes, position, end)?));
                    position += 4;
                }
                0x11 => {
                    let value = u64_at(bytes, position, end)?;
                    let (seconds, increment) = ((value >> 32) as u32, (value & 0xffff_ffff) as u32);
                    out.extend_from_slice(br#"{"$timestamp":{"t":"#);
                    write_i64(out, i64::from(seconds));
                    out.extend_from_slice(br#","i":"#);
                    write_i64(out, i64::from(increment));
                    out.extend_from_slice(b"}}");
                    if noted == Some(Noted::ClusterTime) {
                        if let Some(fields) = fields.as_deref_mut() {
                            fields.cluster_time = Some((seconds, increment));
                        }
                    }
                    position += 8;
                }
                0x12 => {
                    write_i64(out, u64_at(bytes, position, end)? as i64);
                    position += 8;
                }
                0x13 => {
                    write_decimal128(out, bytes_at(bytes, position, 16, end)?.try_into().unwrap());
                    position += 16;
                }
                0x7F => out.extend_from_slice(br#"{"$maxKey":1}"#),
                0xFF => out.extend_from_slice(br#"{"$minKey":1}"#),
                other => return Err(format!("unknown BSON element type 0x{other:02x} at byte {}", name_start - 1)),
            }
        }
        Ok(())
    }
}
