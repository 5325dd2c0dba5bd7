//! A console session for the `growth` scenario's console pages: `tally console-link` against the
//! database, then the link's token posted to the server, as a browser would.

use std::net::SocketAddr;
use std::path::Path;

use hyper::header::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// Signs in to the console of the server at `addr` (serving the database at `url`); answers the
/// `Cookie` header that carries the session.
pub async fn session(tally: &Path, url: &str, addr: SocketAddr) -> Result<HeaderValue, String> {
    let mut cmd = Command::new(tally);
    for (k, _) in std::env::vars() {
        if k.starts_with("TALLY_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(["console-link", "--operator", "bench"])
        .env("TALLY_DATABASE_URL", url)
        .env("TALLY_PUBLIC_URL", format!("http://{addr}"))
        .env("TALLY_LOG_LEVEL", "warn")
        .output()
        .await
        .map_err(|e| format!("running tally console-link: {e}"))?;
    let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let token = link
        .split_once("token=")
        .map(|(_, t)| t.to_owned())
        .ok_or_else(|| {
            format!(
                "tally console-link printed no link: {link} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let body = format!("token={token}");
    let request = format!(
        "POST /console/login HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("signing in: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .map_err(|e| format!("signing in: {e}"))?;
    let cookie = answer
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie").then(|| {
                value
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
        })
        .ok_or_else(|| format!("signing in to the console: no cookie in {answer}"))?;
    HeaderValue::from_str(&cookie).map_err(|e| format!("cookie: {e}"))
}
