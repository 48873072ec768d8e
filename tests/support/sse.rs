//! An SSE client for `GET /api/events`: a raw socket read line by line, so
//! tests see exactly the frames the service wrote.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Service;

/// One SSE frame as a client reads it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<Value>,
}

/// An open `GET /api/events`, read line by line.
pub struct Stream {
    reader: BufReader<TcpStream>,
    pub status: u16,
    headers: Vec<(String, String)>,
}

impl Stream {
    pub fn open(service: &Service, query: &str, headers: &[(&str, &str)]) -> Stream {
        let socket = TcpStream::connect(&service.addr).expect("connect");
        Stream::over(socket, query, headers)
    }

    /// The request on a socket made by the caller (a small receive buffer).
    pub fn over(mut socket: TcpStream, query: &str, headers: &[(&str, &str)]) -> Stream {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = format!("GET /api/events{query} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        socket.write_all(head.as_bytes()).unwrap();
        let mut reader = BufReader::new(socket);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            let (name, value) = trimmed.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        Stream {
            reader,
            status,
            headers,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next frame (comments and `retry:` skipped), or `None` when the
    /// stream ended or nothing came within `wait`.
    pub fn next(&mut self, wait: Duration) -> Option<Frame> {
        self.reader.get_ref().set_read_timeout(Some(wait)).unwrap();
        let mut frame = Frame {
            id: None,
            event: None,
            data: None,
        };
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if frame.id.is_some() || frame.event.is_some() {
                    return Some(frame);
                }
                continue;
            }
            if line.starts_with(':') || line.starts_with("retry:") {
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "id" => frame.id = Some(value.to_string()),
                "event" => frame.event = Some(value.to_string()),
                "data" => frame.data = Some(serde_json::from_str(value).expect("data is JSON")),
                _ => {}
            }
        }
    }

    /// Every frame until the service closes the stream; panics if it is
    /// still open after `within`.
    pub fn rest(&mut self, within: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the stream still open after {within:?}");
            match self.next(left) {
                Some(frame) => frames.push(frame),
                None if self.at_end() => return frames,
                None => {}
            }
        }
    }

    /// Whether the service closed the stream (after `next` gave `None`).
    pub fn at_end(&mut self) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        matches!(self.reader.fill_buf(), Ok([]))
    }

    /// Frames until one of type `kind`, which is returned.
    pub fn until(&mut self, kind: &str, within: Duration) -> Frame {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(frame) = self.next(deadline - Instant::now())
                && frame.event.as_deref() == Some(kind)
            {
                return frame;
            }
        }
        panic!("no {kind} within {within:?}");
    }
}
