//! A static file server for the demo: the repository root on 127.0.0.1, `PORT` (default 8080).
//! GET and HEAD only, no directory listings, nothing outside the root. Files are streamed from
//! disk, never read whole, and `Range: bytes=…` requests get 206 Partial Content with an `ETag`
//! and open CORS, so a model folder served here behaves like the hub for the page's loader
//! (resumed downloads, ranged reads of a checkpoint).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

pub fn serve(root: &Path) -> Result<(), String> {
    let port = match std::env::var("PORT") {
        Ok(p) => p.parse::<u16>().map_err(|_| format!("PORT={p} is not a port number"))?,
        Err(_) => 8080,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    println!("TokenFormer Web: http://127.0.0.1:{port}/  (Ctrl-C stops)");
    serve_on(listener, root)
}

/// Answers every connection `listener` accepts, one thread each, with files under `root`.
pub fn serve_on(listener: TcpListener, root: &Path) -> Result<(), String> {
    let root = root.canonicalize().map_err(|e| format!("serve root {}: {e}", root.display()))?;
    for stream in listener.incoming().flatten() {
        let root = root.clone();
        std::thread::spawn(move || {
            if let Err(e) = respond(&root, stream) {
                eprintln!("serve: {e}");
            }
        });
    }
    Ok(())
}

fn respond(root: &Path, mut stream: TcpStream) -> std::io::Result<()> {
    let mut request_line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut request_line)?;
    let mut range = None;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let with_body = method == "GET";
    if method == "OPTIONS" {
        return head(&mut stream, "204 No Content", "text/plain", 0, &[]);
    }
    if method != "GET" && method != "HEAD" {
        return reply(&mut stream, "405 Method Not Allowed", b"GET only", true);
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let opened = resolve(root, &percent_decode(path)).and_then(|f| Some((File::open(&f).ok()?, f)));
    let Some((mut file, name)) = opened else {
        return reply(&mut stream, "404 Not Found", b"not found", with_body);
    };
    let meta = file.metadata()?;
    let size = meta.len();
    let modified = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let etag = format!("\"{size:x}-{modified:x}\"");
    let kind = mime(&name);
    let (status, start, len) = match range.as_deref().map(|r| parse_range(r, size)) {
        None => ("200 OK", 0, size),
        Some(Some((start, end))) => ("206 Partial Content", start, end + 1 - start),
        Some(None) => {
            let unsatisfiable = format!("content-range: bytes */{size}\r\n");
            return head(&mut stream, "416 Range Not Satisfiable", "text/plain", 0, &[&unsatisfiable]);
        }
    };
    let content_range = format!("content-range: bytes {start}-{}/{size}\r\n", start + len.saturating_sub(1));
    let etag_line = format!("etag: {etag}\r\n");
    let extra: &[&str] = if status.starts_with("206") { &[&etag_line, &content_range] } else { &[&etag_line] };
    head(&mut stream, status, kind, len, extra)?;
    if with_body {
        file.seek(SeekFrom::Start(start))?;
        std::io::copy(&mut file.take(len), &mut stream)?;
    }
    stream.flush()
}

/// The inclusive byte range `bytes=a-b`, `bytes=a-` or `bytes=-n` asks for within `size` bytes,
/// or None when it is malformed, a list, or starts past the end.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?.trim();
    let (first, last) = spec.split_once('-')?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

/// The file a URL path names under `root`: `..` and absolute components are refused, a folder
/// means its index.html.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let mut file = root.to_path_buf();
    for part in Path::new(path.trim_start_matches('/')).components() {
        match part {
            Component::Normal(p) => file.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if file.is_dir() {
        file.push("index.html");
    }
    file.is_file().then_some(file)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The status line and headers of a response whose body is `len` bytes, plus `extra` header lines.
fn head(stream: &mut TcpStream, status: &str, kind: &str, len: u64, extra: &[&str]) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {len}\r\ncache-control: no-cache\r\n\
         accept-ranges: bytes\r\naccess-control-allow-origin: *\r\naccess-control-allow-headers: range\r\n\
         access-control-expose-headers: content-range, content-length, etag, accept-ranges\r\nconnection: close\r\n"
    );
    extra.iter().for_each(|line| head.push_str(line));
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())
}

fn reply(stream: &mut TcpStream, status: &str, body: &[u8], with_body: bool) -> std::io::Result<()> {
    head(stream, status, "text/plain", body.len() as u64, &[])?;
    if with_body {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on a free port over a folder holding `data.bin`; returns its address.
    fn server(data: &[u8]) -> std::net::SocketAddr {
        let dir = std::env::temp_dir().join(format!("xtask-serve-{}-{}", std::process::id(), data.len()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data.bin"), data).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || serve_on(listener, &dir));
        addr
    }

    /// (status line, headers lower-cased, body) of one request.
    fn get(addr: std::net::SocketAddr, request: &str) -> (String, String, Vec<u8>) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).unwrap();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(out[..split].to_vec()).unwrap().to_lowercase();
        let (status, headers) = head.split_once("\r\n").unwrap();
        (status.to_string(), headers.to_string(), out[split + 4..].to_vec())
    }

    #[test]
    fn answers_ranges_like_a_hub() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let addr = server(&data);
        let (status, headers, body) = get(addr, "GET /data.bin HTTP/1.1\r\n\r\n");
        assert_eq!(status, "http/1.1 200 ok");
        assert!(headers.contains("accept-ranges: bytes") && headers.contains("etag: \""), "{headers}");
        assert!(headers.contains("access-control-allow-origin: *"));
        assert_eq!(body, data);

        let (status, headers, body) = get(addr, "GET /data.bin HTTP/1.1\r\nRange: bytes=1000-1999\r\n\r\n");
        assert_eq!(status, "http/1.1 206 partial content");
        assert!(headers.contains("content-range: bytes 1000-1999/300000"), "{headers}");
        assert_eq!(body, &data[1000..2000]);
        let (_, _, body) = get(addr, "GET /data.bin HTTP/1.1\r\nrange: bytes=299990-\r\n\r\n");
        assert_eq!(body, &data[299_990..]);
        let (_, _, body) = get(addr, "GET /data.bin HTTP/1.1\r\nRange: bytes=-5\r\n\r\n");
        assert_eq!(body, &data[data.len() - 5..]);

        let (status, headers, body) = get(addr, "GET /data.bin HTTP/1.1\r\nRange: bytes=300000-\r\n\r\n");
        assert_eq!(status, "http/1.1 416 range not satisfiable");
        assert!(headers.contains("content-range: bytes */300000") && body.is_empty(), "{headers}");

        let (status, headers, body) = get(addr, "HEAD /data.bin HTTP/1.1\r\n\r\n");
        assert_eq!(status, "http/1.1 200 ok");
        assert!(headers.contains("content-length: 300000") && body.is_empty());
        // A climb out of the served folder, percent-encoded as a browser would send it, is refused.
        assert_eq!(get(addr, "GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\n\r\n").0, "http/1.1 404 not found");
    }

    #[test]
    fn range_headers_are_read_strictly() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-200", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-200", 100), Some((0, 99)));
        for bad in ["bytes=10-5", "bytes=100-", "bytes=0-1,4-5", "items=0-1", "bytes=a-b", "bytes=5"] {
            assert_eq!(parse_range(bad, 100), None, "{bad}");
        }
        assert_eq!(parse_range("bytes=0-", 0), None);
    }
}
