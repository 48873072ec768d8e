//! multipart: the `multipart/form-data` bodies of the message routes
//! (API.md, "Writing", uploads): a `payload_json` part and up to 10
//! `files[n]` parts, parsed strictly, and rewritten with only the content of
//! `payload_json` replaced.
//!
//! Why a rewrite and not a re-encoding: the files are Discord's business,
//! not ours. Copying every byte outside `payload_json` as it came keeps an
//! upload exactly the client's, whatever its part headers say, and the
//! rewritten body is built once, so the service's re-send of it is the same
//! bytes.
//!
//! Why strict: the service must see every `nonce` Discord will see, or
//! `enforce_nonce` is defeated. A body Discord's parser could read
//! differently from this one (the boundary inside a part, a line ending in
//! a bare LF, a second `payload_json`, a part of another name, padding after
//! a boundary) is refused rather than guessed at.
//!
//! Invariant: parsing borrows the body and copies nothing out of it but
//! part headers (at most `MAX_PART_HEAD` bytes each); `with_payload` is the
//! one copy of the file bytes.

use std::ops::Range;

use crate::api::error::ApiError;

/// API.md: "at most 10 files" (Discord's own limit, error 30015).
pub const MAX_FILES: usize = 10;
/// RFC 2046: a boundary is 1 to 70 characters.
const MAX_BOUNDARY: usize = 70;
/// A part's header block (`Content-Disposition` with a filename, and
/// `Content-Type`); a longer one is refused, not searched to its end.
const MAX_PART_HEAD: usize = 4 * 1024;
const PAYLOAD_JSON: &str = "payload_json";

/// A parsed `multipart/form-data` body: where its parts are, borrowed from
/// the request.
#[derive(Debug)]
pub struct Form<'a> {
    body: &'a [u8],
    boundary: &'a str,
    /// The content of the `payload_json` part, if there is one.
    payload: Option<Range<usize>>,
    /// Where the close delimiter (`CRLF--boundary--`) starts: a
    /// `payload_json` the client left out goes in front of it.
    close: usize,
    files: usize,
}

impl<'a> Form<'a> {
    /// The `payload_json` part's content, as sent.
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.payload.clone().map(|range| &self.body[range])
    }

    /// How many `files[n]` parts the body has.
    pub fn files(&self) -> usize {
        self.files
    }

    /// The Content-Type of the rewritten body: the client's boundary,
    /// quoted only when it must be.
    pub fn content_type(&self) -> String {
        let token = self
            .boundary
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'\'' | b'+' | b'_' | b'-' | b'.'));
        if token {
            format!("multipart/form-data; boundary={}", self.boundary)
        } else {
            format!("multipart/form-data; boundary=\"{}\"", self.boundary)
        }
    }

    /// The body with `payload_json`'s content replaced by `json` (a part
    /// added before the close delimiter when there was none), every other
    /// byte copied as it came. `json` is serde_json's compact output, which
    /// never holds a line break, so it cannot contain the boundary.
    pub fn with_payload(&self, json: &[u8]) -> Vec<u8> {
        let (head, tail) = match &self.payload {
            Some(range) => (&self.body[..range.start], &self.body[range.end..]),
            None => (&self.body[..self.close], &self.body[self.close..]),
        };
        let added = match &self.payload {
            Some(_) => String::new(),
            None => format!(
                "\r\n--{}\r\nContent-Disposition: form-data; name=\"{PAYLOAD_JSON}\"\r\n\
                 Content-Type: application/json\r\n\r\n",
                self.boundary
            ),
        };
        let mut out = Vec::with_capacity(head.len() + added.len() + json.len() + tail.len());
        out.extend_from_slice(head);
        out.extend_from_slice(added.as_bytes());
        out.extend_from_slice(json);
        out.extend_from_slice(tail);
        out
    }
}

/// The `boundary` parameter of a `multipart/form-data` Content-Type,
/// unquoted, checked against RFC 2046's characters.
pub fn boundary(content_type: &str) -> Result<&str, ApiError> {
    let mut found = None;
    for param in content_type.split(';').skip(1) {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        if found.is_some() {
            return Err(malformed("the Content-Type names the boundary twice"));
        }
        let value = value.trim();
        found = Some(
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value),
        );
    }
    let boundary =
        found.ok_or_else(|| malformed("the Content-Type has no `boundary` parameter"))?;
    let valid = (1..=MAX_BOUNDARY).contains(&boundary.len())
        && !boundary.ends_with(' ')
        && boundary
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b));
    if !valid {
        return Err(malformed(
            "the boundary must be 1 to 70 letters, digits or '()+_,-./:=? (RFC 2046)",
        ));
    }
    Ok(boundary)
}

/// Parses a message route's `multipart/form-data` body (`content_type` is
/// the request's Content-Type).
pub fn parse<'a>(content_type: &'a str, body: &'a [u8]) -> Result<Form<'a>, ApiError> {
    let boundary = boundary(content_type)?;
    let dash = boundary.len() + 2;
    if !(body.starts_with(b"--") && body[2..].starts_with(boundary.as_bytes())) {
        return Err(malformed(
            "the body must start with `--` and the boundary, with no preamble",
        ));
    }
    let mut form = Form {
        body,
        boundary,
        payload: None,
        close: 0,
        files: 0,
    };
    let mut file_numbers: Vec<u64> = Vec::new();
    // Just past a delimiter (`--boundary`, CRLF-led but for the first).
    let mut pos = dash;
    loop {
        if body[pos..].starts_with(b"--") {
            if pos == dash {
                return Err(malformed("the body has no parts"));
            }
            let epilogue = &body[pos + 2..];
            if !(epilogue.is_empty() || epilogue == b"\r\n") {
                return Err(malformed("bytes follow the closing boundary"));
            }
            form.close = pos - dash - 2;
            return Ok(form);
        }
        if !body[pos..].starts_with(b"\r\n") {
            return Err(malformed(
                "a boundary line must end in CRLF right after the boundary",
            ));
        }
        let head_start = pos + 2;
        let window = &body[head_start..body.len().min(head_start + MAX_PART_HEAD + 4)];
        if window.starts_with(b"\r\n") {
            return Err(malformed("a part has no headers, so no name"));
        }
        let head_len = find(window, b"\r\n\r\n").ok_or_else(|| {
            malformed(if window.len() > MAX_PART_HEAD {
                "a part's headers are over 4 KiB"
            } else {
                "a part's headers never end (a blank line, CRLF CRLF, ends them)"
            })
        })?;
        let part = part_head(&window[..head_len])?;
        let data_start = head_start + head_len + 4;
        let data_end = next_delimiter(body, data_start, boundary)?;
        match part {
            Part::Payload if form.payload.is_some() => {
                return Err(malformed("the body has two `payload_json` parts"));
            }
            Part::Payload => form.payload = Some(data_start..data_end),
            Part::File(n) => {
                if file_numbers.contains(&n) {
                    return Err(malformed(format!("the body has two `files[{n}]` parts")));
                }
                if file_numbers.len() == MAX_FILES {
                    return Err(ApiError::bad_request(format!(
                        "a message takes at most {MAX_FILES} files (`files[n]` parts); this body \
                         has more"
                    )));
                }
                file_numbers.push(n);
                form.files += 1;
            }
        }
        pos = data_end + 2 + dash;
    }
}

/// What a part is, by its name.
enum Part {
    Payload,
    /// `files[n]`, with its `n`.
    File(u64),
}

/// Reads a part's header block (CRLF-separated lines, no blank line).
fn part_head(raw: &[u8]) -> Result<Part, ApiError> {
    let text = std::str::from_utf8(raw).map_err(|_| malformed("a part's headers are not UTF-8"))?;
    let mut disposition = None;
    for line in text.split("\r\n") {
        if line.starts_with([' ', '\t']) || line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(malformed(
                "a part header is folded or holds a control character",
            ));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed(format!("a part header has no colon: {line:?}")))?;
        if name.trim().eq_ignore_ascii_case("content-disposition") {
            if disposition.is_some() {
                return Err(malformed("a part has two Content-Disposition headers"));
            }
            disposition = Some(value.trim());
        }
    }
    let disposition = disposition
        .ok_or_else(|| malformed("a part has no Content-Disposition header, so no name"))?;
    let params = disposition_params(disposition)?;
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    };
    let name = get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| malformed("a part's Content-Disposition has no `name`"))?;
    let has_filename = get("filename").is_some_and(|f| !f.is_empty()) || get("filename*").is_some();
    if name == PAYLOAD_JSON {
        // A parser that takes any part with a filename for a file would
        // not see this one as the payload.
        if has_filename {
            return Err(malformed("`payload_json` has a filename, like a file"));
        }
        return Ok(Part::Payload);
    }
    let number = name
        .strip_prefix("files[")
        .and_then(|n| n.strip_suffix(']'))
        .filter(|n| (1..=20).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "a part named {name:?} is not taken: send the message's JSON as `payload_json` \
                 and each file as `files[n]`"
            ))
        })?;
    if !has_filename {
        return Err(malformed(format!("the file part `{name}` has no filename")));
    }
    Ok(Part::File(number))
}

/// `form-data; name="files[0]"; filename="a.png"` as (key, value) pairs;
/// values are tokens or quoted strings (with `\` escapes). A key given
/// twice is refused: which one counts would be a guess.
fn disposition_params(value: &str) -> Result<Vec<(String, String)>, ApiError> {
    let (kind, mut rest) = value.split_once(';').unwrap_or((value, ""));
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(malformed("a part's Content-Disposition is not `form-data`"));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(params);
        }
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| malformed("a Content-Disposition parameter has no `=`"))?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let value;
        if let Some(quoted) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end =
                end.ok_or_else(|| malformed("a quoted Content-Disposition value never ends"))?;
            value = out;
            rest = quoted[end..].trim_start();
        } else {
            let (token, after) = after.split_once(';').unwrap_or((after, ""));
            value = token.trim().to_string();
            rest = after;
            if params.iter().any(|(k, _)| *k == key) {
                return Err(malformed(format!(
                    "a Content-Disposition names `{key}` twice"
                )));
            }
            params.push((key, value));
            continue;
        }
        if params.iter().any(|(k, _)| *k == key) {
            return Err(malformed(format!(
                "a Content-Disposition names `{key}` twice"
            )));
        }
        params.push((key, value));
        rest = match rest.strip_prefix(';') {
            Some(next) => next,
            None if rest.is_empty() => rest,
            None => return Err(malformed("a Content-Disposition value is followed by junk")),
        };
    }
}

/// Where the part whose content starts at `from` ends: at the next
/// `CRLF--boundary` followed by CRLF or `--`. A line starting `--boundary`
/// anywhere else (after a bare LF, or followed by anything else) is
/// refused: RFC 2046 forbids the boundary inside a part, and a parser
/// laxer than this one would see a part there that this one does not.
fn next_delimiter(body: &[u8], from: usize, boundary: &str) -> Result<usize, ApiError> {
    let mut line = from;
    loop {
        let rest = &body[line..];
        if rest.starts_with(b"--") && rest[2..].starts_with(boundary.as_bytes()) {
            let after = &rest[2 + boundary.len()..];
            let crlf_led = line >= from + 2 && &body[line - 2..line] == b"\r\n";
            if crlf_led && (after.starts_with(b"\r\n") || after.starts_with(b"--")) {
                return Ok(line - 2);
            }
            return Err(malformed(
                "the boundary appears inside a part, or a boundary line is not CRLF-led or \
                 followed by CRLF",
            ));
        }
        let newline = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| malformed("a part is not closed by the boundary"))?;
        line += newline + 1;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn malformed(why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("malformed multipart/form-data body: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPE: &str = "multipart/form-data; boundary=XyZ-42";

    fn part(name: &str, filename: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut out = format!("--XyZ-42\r\nContent-Disposition: form-data; name=\"{name}\"");
        if let Some(filename) = filename {
            out.push_str(&format!("; filename=\"{filename}\""));
        }
        out.push_str("\r\nContent-Type: application/octet-stream\r\n\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    }

    fn body(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut out: Vec<u8> = parts.concat();
        out.extend_from_slice(b"--XyZ-42--\r\n");
        out
    }

    /// The parts of a body as (name, data), by a parser written apart from
    /// this one.
    fn split(body: &[u8]) -> Vec<(String, Vec<u8>)> {
        let text = body.to_vec();
        let delimiter = b"\r\n--XyZ-42";
        let mut parts = Vec::new();
        let mut rest = &text["--XyZ-42".len()..];
        while !rest.starts_with(b"--") {
            rest = &rest[2..];
            let blank = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            let head = String::from_utf8_lossy(&rest[..blank]).into_owned();
            let name = head
                .split("name=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let data = &rest[blank + 4..];
            let end = data
                .windows(delimiter.len())
                .position(|w| w == delimiter)
                .unwrap();
            parts.push((name.to_string(), data[..end].to_vec()));
            rest = &data[end + delimiter.len()..];
        }
        parts
    }

    #[test]
    fn a_body_round_trips_with_only_payload_json_replaced() {
        let file: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let original = body(&[
            part("payload_json", None, br#"{"content":"hi"}"#),
            part("files[0]", Some("a.bin"), &file),
            part("files[1]", Some("b;c \\\"d\\\".txt"), b""),
        ]);
        let form = parse(TYPE, &original).unwrap();
        assert_eq!(form.files(), 2);
        assert_eq!(form.payload(), Some(&br#"{"content":"hi"}"#[..]));
        let rewritten = form.with_payload(br#"{"content":"hi","nonce":"n"}"#);
        let parts = split(&rewritten);
        assert_eq!(
            parts[0],
            (
                "payload_json".into(),
                br#"{"content":"hi","nonce":"n"}"#.to_vec()
            )
        );
        assert_eq!(parts[1], ("files[0]".into(), file));
        assert_eq!(parts[2].1, b"");
        // The same payload again gives the very same bytes.
        assert_eq!(form.with_payload(br#"{"content":"hi"}"#), original);
        let content_type = form.content_type();
        let again = parse(&content_type, &rewritten).unwrap();
        assert_eq!(
            again.payload(),
            Some(&br#"{"content":"hi","nonce":"n"}"#[..])
        );
    }

    #[test]
    fn a_missing_payload_json_is_added_before_the_close() {
        let original = body(&[part("files[0]", Some("a.txt"), b"abc")]);
        let form = parse(TYPE, &original).unwrap();
        assert_eq!(form.payload(), None);
        let rewritten = form.with_payload(b"{\"nonce\":\"n\"}");
        let parts = split(&rewritten);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], ("files[0]".into(), b"abc".to_vec()));
        assert_eq!(
            parts[1],
            ("payload_json".into(), b"{\"nonce\":\"n\"}".to_vec())
        );
        assert!(rewritten.ends_with(b"\r\n--XyZ-42--\r\n"));
    }

    #[test]
    fn eleven_files_are_refused_naming_the_limit() {
        let ten: Vec<Vec<u8>> = (0..10)
            .map(|n| part(&format!("files[{n}]"), Some("f"), b"x"))
            .collect();
        assert_eq!(parse(TYPE, &body(&ten)).unwrap().files(), 10);
        let mut eleven = ten;
        eleven.push(part("files[10]", Some("f"), b"x"));
        let error = parse(TYPE, &body(&eleven)).unwrap_err().to_string();
        assert!(error.contains("at most 10 files"), "{error}");
    }

    #[test]
    fn file_bytes_that_look_like_boundaries_but_are_not_survive_the_rewrite() {
        let tricky =
            b"--XyZ-42\r\n mid--XyZ-42--\r\n\r\n--XyZ-4\r\n--XyZ-43\r\r\n--XyZ\r\n\r\n\r--XyZ-42"
                .to_vec();
        let original = body(&[
            part("files[0]", Some("t.bin"), &tricky),
            part("payload_json", None, b"{}"),
        ]);
        // Content starting with the boundary starts a line (after the
        // blank line): that is the boundary inside a part, refused.
        assert!(parse(TYPE, &original).is_err());
        let tricky = &tricky[2..];
        let original = body(&[
            part("files[0]", Some("t.bin"), tricky),
            part("payload_json", None, b"{}"),
        ]);
        let form = parse(TYPE, &original).unwrap();
        let rewritten = form.with_payload(b"{\"a\":1}");
        let parts = split(&rewritten);
        assert_eq!(parts[0].1, tricky);
        assert_eq!(parts[1].1, b"{\"a\":1}");
    }

    #[test]
    fn a_boundary_inside_a_part_or_after_a_bare_lf_is_refused() {
        for data in [
            &b"a\r\n--XyZ-42x"[..],
            b"a\n--XyZ-42\r\n",
            b"a\r\n--XyZ-42 \r\n",
        ] {
            let original = body(&[part("files[0]", Some("f"), data)]);
            assert!(
                parse(TYPE, &original).is_err(),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn malformed_boundaries_and_parts_are_refused() {
        let good = body(&[part("payload_json", None, b"{}")]);
        for content_type in [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\"a b \"",
            "multipart/form-data; boundary=a{b",
            "multipart/form-data; boundary=XyZ-42; boundary=XyZ-42",
            &format!("multipart/form-data; boundary={}", "x".repeat(71)),
        ] {
            assert!(parse(content_type, &good).is_err(), "{content_type}");
        }
        assert!(parse("multipart/form-data; boundary=\"XyZ-42\"", &good).is_ok());
        let cases: Vec<Vec<u8>> = vec![
            // preamble
            [b"junk\r\n".to_vec(), good.clone()].concat(),
            // no parts
            b"--XyZ-42--\r\n".to_vec(),
            // never closed
            part("payload_json", None, b"{}"),
            // epilogue with content
            [good.clone(), b"more".to_vec()].concat(),
            // part without headers
            b"--XyZ-42\r\n\r\ndata\r\n--XyZ-42--".to_vec(),
            // part without a name
            b"--XyZ-42\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ-42--".to_vec(),
            // another name
            body(&[part("content", None, b"hi")]),
            // a file without a filename
            body(&[part("files[0]", None, b"x")]),
            // files[n] twice, also written differently
            body(&[part("files[1]", Some("a"), b"x"), part("files[01]", Some("b"), b"y")]),
            // payload_json with a filename
            body(&[part("payload_json", Some("p.json"), b"{}")]),
            // two payload_json
            body(&[part("payload_json", None, b"{}"), part("payload_json", None, b"{}")]),
            // LF-only line ends
            b"--XyZ-42\nContent-Disposition: form-data; name=\"payload_json\"\n\n{}\n--XyZ-42--"
                .to_vec(),
            // a name given twice
            b"--XyZ-42\r\nContent-Disposition: form-data; name=\"files[0]\"; name=\"payload_json\"\r\n\r\n{}\r\n--XyZ-42--"
                .to_vec(),
            // headers over the bound
            [
                b"--XyZ-42\r\nContent-Disposition: form-data; name=\"payload_json\"\r\nX-Pad: ".to_vec(),
                vec![b'a'; MAX_PART_HEAD],
                b"\r\n\r\n{}\r\n--XyZ-42--".to_vec(),
            ]
            .concat(),
        ];
        for case in cases {
            assert!(
                parse(TYPE, &case).is_err(),
                "{:?}",
                String::from_utf8_lossy(&case)
            );
        }
    }

    #[test]
    fn crlf_is_required_around_boundaries_and_a_bare_close_is_fine() {
        // No CRLF after the close delimiter is allowed (it ends the body).
        let mut original = part("payload_json", None, b"{}");
        original.extend_from_slice(b"--XyZ-42--");
        let form = parse(TYPE, &original).unwrap();
        let rewritten = form.with_payload(b"[]");
        assert!(rewritten.ends_with(b"\r\n--XyZ-42--"));
        // CR without LF in a part is data.
        let original = body(&[part("files[0]", Some("f"), b"a\rb\r\r")]);
        let form = parse(TYPE, &original).unwrap();
        assert_eq!(split(&form.with_payload(b"{}"))[0].1, b"a\rb\r\r");
        // A boundary line followed by LF only is refused.
        let bad = b"--XyZ-42\nContent-Disposition: form-data; name=\"payload_json\"\r\n\r\n{}\r\n--XyZ-42--";
        assert!(parse(TYPE, bad).is_err());
    }

    #[test]
    fn the_content_type_quotes_the_boundary_only_when_needed() {
        let original =
            b"--a b\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n\r\n{}\r\n--a b--";
        let form = parse("multipart/form-data; boundary=\"a b\"", original).unwrap();
        assert_eq!(form.content_type(), "multipart/form-data; boundary=\"a b\"");
        let original = body(&[part("payload_json", None, b"{}")]);
        assert_eq!(parse(TYPE, &original).unwrap().content_type(), TYPE);
    }
}
