//! `multipart/form-data` parsing for message uploads.
//!
//! Why it exists: Create Message and Edit Message accept files. Discord
//! (`reference.mdx`, "Uploading Files"): the body is `multipart/form-data`;
//! each file is a part `files[n]` whose `Content-Disposition` carries a
//! `name` and a `filename`; the other parameters travel as JSON in one
//! `payload_json` part. The fake must read such bodies to store attachments,
//! find the `nonce` in `payload_json`, and refuse malformed uploads, so a
//! service that builds multipart bodies by hand is tested against the rules.
//!
//! Invariant: parsing borrows the body (parts are slices into it), so a
//! 25 MiB upload is never copied; the parser is strict (RFC 7578 framing
//! with CRLF line ends) and reports the first problem it meets.

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// `name` from `Content-Disposition`.
    pub name: String,
    /// `filename` from `Content-Disposition`, if any (file parts have one).
    pub filename: Option<String>,
    /// The part's own `Content-Type`, if given.
    pub content_type: Option<String>,
    pub data: &'a [u8],
}

/// The `boundary` parameter of a `multipart/form-data` Content-Type.
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

/// The first position of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Splits `form-data; name="a"; filename="b"` into parameters, honouring
/// quotes (a filename may contain `;`).
fn disposition_params(value: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut pieces = Vec::new();
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => pieces.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    pieces.push(current);
    for piece in pieces.into_iter().skip(1) {
        if let Some((k, v)) = piece.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            params.push((k.trim().to_ascii_lowercase(), v.replace("\\\"", "\"")));
        }
    }
    params
}

/// Parses the part headers between a boundary line and the blank line.
fn part_headers<'a>(raw: &[u8], data: &'a [u8]) -> Result<Part<'a>, String> {
    let text = String::from_utf8_lossy(raw);
    let mut disposition = None;
    let mut content_type = None;
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed part header {line:?}"))?;
        if name.trim().eq_ignore_ascii_case("content-disposition") {
            disposition = Some(value.trim().to_string());
        } else if name.trim().eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_string());
        }
    }
    let disposition = disposition.ok_or("a part has no Content-Disposition header")?;
    let params = disposition_params(&disposition);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let name = get("name")
        .filter(|n| !n.is_empty())
        .ok_or("a part's Content-Disposition has no name")?;
    Ok(Part {
        name,
        filename: get("filename"),
        content_type,
        data,
    })
}

/// Parses a whole `multipart/form-data` body.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let delimiter = format!("--{boundary}");
    let next_delimiter = format!("\r\n--{boundary}");
    let mut pos = find(body, delimiter.as_bytes(), 0)
        .ok_or("the body does not contain the boundary")?
        + delimiter.len();
    let mut parts = Vec::new();
    loop {
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        if !rest.starts_with(b"\r\n") {
            return Err("a boundary line is not followed by CRLF".into());
        }
        pos += 2;
        let (headers_end, data_start) = if body[pos..].starts_with(b"\r\n") {
            (pos, pos + 2)
        } else {
            let end = find(body, b"\r\n\r\n", pos).ok_or("a part's headers never end")?;
            (end, end + 4)
        };
        let data_end = find(body, next_delimiter.as_bytes(), data_start)
            .ok_or("a part is not closed by the boundary")?;
        parts.push(part_headers(
            &body[pos..headers_end],
            &body[data_start..data_end],
        )?);
        pos = data_end + next_delimiter.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_boundary_parameter() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"ab c\""),
            Some("ab c".into())
        );
        assert_eq!(
            boundary("multipart/form-data;Boundary=xyz"),
            Some("xyz".into())
        );
        assert_eq!(boundary("multipart/form-data"), None);
    }

    #[test]
    fn parses_payload_json_and_files() {
        let body = b"preamble\r\n--XX\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n\
Content-Type: application/json\r\n\r\n{\"content\":\"hi\"}\r\n--XX\r\n\
Content-Disposition: form-data; name=\"files[0]\"; filename=\"a;b.txt\"\r\n\
Content-Type: text/plain\r\n\r\nline1\r\nline2\r\n--XX--\r\n";
        let parts = parse(body, "XX").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "payload_json");
        assert_eq!(parts[0].data, b"{\"content\":\"hi\"}");
        assert_eq!(parts[1].filename.as_deref(), Some("a;b.txt"));
        assert_eq!(parts[1].content_type.as_deref(), Some("text/plain"));
        assert_eq!(parts[1].data, b"line1\r\nline2");
    }

    #[test]
    fn rejects_parts_without_a_name_and_unterminated_bodies() {
        let no_name = b"--XX\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XX--";
        assert!(parse(no_name, "XX").is_err());
        let open = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx";
        assert!(parse(open, "XX").is_err());
        assert!(parse(b"nothing here", "XX").is_err());
    }
}
