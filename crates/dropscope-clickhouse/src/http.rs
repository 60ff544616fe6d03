//! A minimal blocking HTTP/1.1 client for ClickHouse's HTTP interface:
//! one POST per request over a fresh loopback connection (`Connection:
//! close`), chunked or length-delimited responses.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Where a ClickHouse HTTP interface listens.
#[derive(Debug, Clone)]
pub struct Http {
    host: String,
    port: u16,
    timeout: Duration,
}

impl Http {
    /// Parses `http://host:port` (a trailing `/` is allowed; no TLS, no path).
    pub fn new(url: &str) -> Result<Http, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("ClickHouse URL must start with http://: {url:?}"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("bad port in ClickHouse URL {url:?}"))?,
            ),
            None => (rest.to_string(), 8123),
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("bad host in ClickHouse URL {url:?}"));
        }
        Ok(Http {
            host,
            port,
            timeout: Duration::from_secs(300),
        })
    }

    /// POSTs `body` with URL parameters; returns the response body on 200,
    /// ClickHouse's error text otherwise.
    pub fn post(&self, params: &[(&str, &str)], body: &[u8]) -> Result<String, String> {
        let qs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
            .collect();
        let mut stream = TcpStream::connect((self.host.as_str(), self.port)).map_err(|e| {
            format!(
                "connecting to ClickHouse at {}:{}: {e}",
                self.host, self.port
            )
        })?;
        stream.set_read_timeout(Some(self.timeout)).ok();
        stream.set_write_timeout(Some(self.timeout)).ok();
        let head = format!(
            "POST /?{} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            qs.join("&"),
            self.host,
            self.port,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(body))
            .map_err(|e| format!("sending to ClickHouse: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| format!("reading from ClickHouse: {e}"))?;
        let (status, text) = parse_response(&raw)?;
        if status == 200 {
            Ok(text)
        } else {
            Err(format!("ClickHouse answered {status}: {}", text.trim()))
        }
    }
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Status and body of a raw HTTP/1.x response.
fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("ClickHouse closed the connection without a complete response")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("malformed HTTP status line")?;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    let body = &raw[end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    String::from_utf8(body)
        .map(|s| (status, s))
        .map_err(|_| "ClickHouse answered invalid UTF-8".to_string())
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let nl = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunked response")?;
        let size_text = String::from_utf8_lossy(&b[..nl]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_and_plain_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), (200, "abcde".to_string()));
        let raw = b"HTTP/1.1 500 Internal\r\nContent-Length: 4\r\n\r\noops";
        assert_eq!(parse_response(raw).unwrap(), (500, "oops".to_string()));
    }

    #[test]
    fn urls() {
        let h = Http::new("http://127.0.0.1:18123/").unwrap();
        assert_eq!((h.host.as_str(), h.port), ("127.0.0.1", 18123));
        assert!(Http::new("https://x").is_err());
        assert_eq!(url_encode("a b&c=d"), "a%20b%26c%3Dd");
    }
}
