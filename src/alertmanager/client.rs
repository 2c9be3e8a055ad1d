//! One `POST` of JSON over HTTP/1.1, bounded by a timeout: all the sink asks of the network.
//! `Connection: close` and `Content-Length`, so neither side needs chunking or keep-alive.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Url;

/// The most of an answer read: Alertmanager's are a few bytes; an error's first lines say why.
const MAX_ANSWER: u64 = 64 * 1024;

/// Posts `body` to `path` on `url`'s server; `Ok` on a 2xx answer, else what went wrong, in
/// one line.
pub async fn post(url: &Url, path: &str, body: &[u8], timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, exchange(url, path, body)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {url} within {}",
            humantime::format_duration(timeout)
        )),
    }
}

async fn exchange(url: &Url, path: &str, body: &[u8]) -> Result<(), String> {
    let authority = url.authority();
    let mut stream = TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: unitwarden/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream
        .write_all(&request)
        .await
        .map_err(|e| format!("cannot send to {url}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("no answer from {url}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default();
    let code = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| {
            format!(
                "{url} did not answer in HTTP: {:?}",
                crate::text::one_line(&text.chars().take(80).collect::<String>())
            )
        })?;
    if (200..300).contains(&code) {
        return Ok(());
    }
    let said = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .unwrap_or_default();
    let said: String = said.chars().take(200).collect();
    Err(format!(
        "{url} answered {}: {}",
        crate::text::one_line(status_line.split_once(' ').map_or("", |s| s.1)),
        crate::text::one_line(&said)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-shot server on a real loopback socket that answers `reply` and returns what it
    /// was sent.
    async fn serve_once(reply: &'static str) -> (Url, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/am", l.local_addr().unwrap())).unwrap();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = vec![0u8; 4096];
            let mut n = 0;
            // Read the head and the 2-byte body.
            while !String::from_utf8_lossy(&got[..n]).ends_with("\r\n\r\n[]") {
                n += s.read(&mut got[n..]).await.unwrap();
            }
            s.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&got[..n]).into_owned()
        });
        (url, h)
    }

    #[tokio::test]
    async fn a_post_is_plain_http_1_1_and_answers_are_read_by_status() {
        let (url, h) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        post(&url, &url.alerts_path(), b"[]", Duration::from_secs(5))
            .await
            .unwrap();
        let sent = h.await.unwrap();
        assert!(
            sent.starts_with("POST /am/api/v2/alerts HTTP/1.1\r\n"),
            "{sent}"
        );
        assert!(sent.contains("Content-Length: 2\r\n"), "{sent}");

        let (url, _h) =
            serve_once("HTTP/1.1 400 Bad Request\r\n\r\n{\"message\":\"bad alert\"}").await;
        let e = post(&url, "/x", b"[]", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            e.ends_with("answered 400 Bad Request: {\"message\":\"bad alert\"}"),
            "{e}"
        );

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", closed.local_addr().unwrap())).unwrap();
        drop(closed);
        let e = post(&url, "/x", b"[]", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.starts_with("cannot connect to http://127.0.0.1:"), "{e}");
    }

    #[tokio::test]
    async fn a_silent_server_is_cut_off_at_the_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", l.local_addr().unwrap())).unwrap();
        let e = post(&url, "/x", b"[]", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.contains("within 200ms"), "{e}");
        drop(l);
    }
}
