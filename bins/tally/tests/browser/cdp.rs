//! Just enough of headless Chromium and the Chrome DevTools Protocol for the browser tests: a
//! launcher that learns the DevTools endpoint from the browser's stderr, and a minimal
//! WebSocket client (RFC 6455: upgrade handshake, masked client frames, fragmented messages,
//! ping/pong, close) over a plain `TcpStream`, speaking CDP's JSON commands and events.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

/// The variable naming a Chromium binary, tried before the usual names on `PATH`.
pub const CHROMIUM_ENV: &str = "TALLY_TEST_CHROMIUM";
/// How long a single DevTools command, or the browser's start, may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The `Sec-WebSocket-Key` every handshake sends (RFC 6455's own example), and the
/// `Sec-WebSocket-Accept` a conforming server answers to it.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// No DevTools message in these tests comes close; anything larger is a broken stream.
const MAX_MESSAGE: u64 = 64 << 20;

fn other(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

/// The Chromium to drive: `$TALLY_TEST_CHROMIUM` when set (a path, or a name on `PATH`; it
/// must exist), else the first of `chromium`, `chromium-browser`, `google-chrome`,
/// `google-chrome-stable` found on `PATH`; `None` when there is none.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CHROMIUM_ENV).filter(|p| !p.is_empty()) {
        // Named on purpose: a wrong name is a mistake to report, not a reason to skip.
        let path = PathBuf::from(path);
        let found = if path.components().count() > 1 {
            path.is_file().then_some(path.clone())
        } else {
            on_path(&path.to_string_lossy())
        };
        assert!(
            found.is_some(),
            "{CHROMIUM_ENV}={} is not a file",
            path.display()
        );
        return found;
    }
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .find_map(|name| on_path(name))
}

fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A headless Chromium with its own profile, killed when dropped.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    /// `127.0.0.1:PORT` of the DevTools HTTP and WebSocket endpoints.
    pub host: String,
    /// The browser-level DevTools WebSocket URL.
    pub ws_url: String,
    _profile: TempDir,
}

impl Browser {
    /// Starts `binary` headless on about:blank and waits for its DevTools endpoint.
    pub async fn launch(binary: &std::path::Path) -> io::Result<Self> {
        let profile = TempDir::new()?;
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().ok_or_else(|| other("no stderr pipe"))?;
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let found = timeout(STEP_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.trim().strip_prefix("DevTools listening on ") {
                    return Ok(Some(url.trim().to_owned()));
                }
                seen.push(line);
            }
            Ok::<_, io::Error>(None)
        })
        .await;
        let ws_url = match found {
            Ok(Ok(Some(url))) => url,
            Ok(Ok(None)) => {
                let status = child.wait().await?;
                return Err(other(format!(
                    "{} exited ({status}) without a DevTools endpoint; stderr:\n{}",
                    binary.display(),
                    seen.join("\n")
                )));
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(other(format!(
                    "{} announced no DevTools endpoint within {STEP_TIMEOUT:?}; stderr:\n{}",
                    binary.display(),
                    seen.join("\n")
                )));
            }
        };
        // Keep draining stderr: a full pipe would block the browser.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let host = ws_url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| other(format!("unexpected DevTools URL {ws_url}")))?
            .to_owned();
        Ok(Self {
            child,
            host,
            ws_url,
            _profile: profile,
        })
    }

    /// A new tab on about:blank, through `/json/new` (PUT in current Chrome, GET in older
    /// ones), else through the browser target's `Target.createTarget`.
    pub async fn new_page(&self) -> io::Result<Page> {
        let client = reqwest::Client::builder()
            .timeout(STEP_TIMEOUT)
            .build()
            .map_err(|e| other(e.to_string()))?;
        let endpoint = format!("http://{}/json/new?about:blank", self.host);
        for method in [reqwest::Method::PUT, reqwest::Method::GET] {
            let Ok(res) = client.request(method, &endpoint).send().await else {
                continue;
            };
            if !res.status().is_success() {
                continue;
            }
            let Ok(target) = res.json::<Value>().await else {
                continue;
            };
            if let Some(url) = target["webSocketDebuggerUrl"].as_str() {
                return Page::connect(url).await;
            }
        }
        let mut browser = Cdp::connect(&self.ws_url).await?;
        let created = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let id = created["targetId"]
            .as_str()
            .ok_or_else(|| other(format!("Target.createTarget answered {created}")))?;
        browser.close().await;
        Page::connect(&format!("ws://{}/devtools/page/{id}", self.host)).await
    }

    /// Asks the browser to quit, and kills it when it does not within a few seconds.
    pub async fn close(mut self) {
        if let Ok(mut cdp) = Cdp::connect(&self.ws_url).await {
            let _ = cdp.send("Browser.close", json!({})).await;
        }
        if timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// One tab, through its own DevTools connection.
#[derive(Debug)]
pub struct Page {
    cdp: Cdp,
}

impl Page {
    async fn connect(ws_url: &str) -> io::Result<Self> {
        let mut cdp = Cdp::connect(ws_url).await?;
        cdp.call("Page.enable", json!({})).await?;
        cdp.call("Runtime.enable", json!({})).await?;
        Ok(Self { cdp })
    }

    /// Navigates to `url` and waits until that document has loaded (readyState `complete`).
    pub async fn goto(&mut self, url: &str, within: Duration) -> io::Result<()> {
        self.cdp.events.clear();
        let nav = self
            .cdp
            .call("Page.navigate", json!({ "url": url }))
            .await?;
        if let Some(error) = nav["errorText"].as_str() {
            return Err(other(format!("navigating to {url}: {error}")));
        }
        self.cdp.wait_event("Page.loadEventFired", within).await?;
        let check = format!(
            "document.readyState === 'complete' && location.href === {}",
            Value::String(url.to_owned())
        );
        self.wait_until(&check, within).await
    }

    /// Evaluates `expression` in the page and answers its value (JSON-serialisable results
    /// only). A script that throws is an error.
    pub async fn eval(&mut self, expression: &str) -> io::Result<Value> {
        let reply = self
            .cdp
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(details) = reply.get("exceptionDetails") {
            return Err(other(format!("`{expression}` threw: {details}")));
        }
        Ok(reply["result"]["value"].clone())
    }

    /// Polls `expression` until it is `true`. Errors on the way (a navigation destroying the
    /// context the script ran in) count as "not yet".
    pub async fn wait_until(&mut self, expression: &str, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.eval(expression).await {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(v) => v,
                Err(e) => Value::String(e.to_string()),
            };
            if Instant::now() >= deadline {
                let url = self
                    .eval("location.href")
                    .await
                    .unwrap_or_else(|e| Value::String(e.to_string()));
                let text = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await
                    .unwrap_or_default();
                return Err(other(format!(
                    "`{expression}` not true within {within:?} (last: {last}) at {url}; page: {text}"
                )));
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the viewport: `width` × `height` CSS pixels at scale 1.
    #[allow(dead_code)]
    pub async fn viewport(&mut self, width: u32, height: u32) -> io::Result<()> {
        self.cdp
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600 }),
            )
            .await
            .map(|_| ())
    }

    /// Makes the page's clock read in the IANA time zone `zone` (as a reader there sees it).
    #[allow(dead_code)]
    pub async fn timezone(&mut self, zone: &str) -> io::Result<()> {
        self.cdp
            .call(
                "Emulation.setTimezoneOverride",
                json!({ "timezoneId": zone }),
            )
            .await
            .map(|_| ())
    }

    /// Saves a PNG of the whole page (not only the viewport) at `path`.
    #[allow(dead_code)]
    pub async fn screenshot(&mut self, path: &std::path::Path) -> io::Result<()> {
        use base64::Engine as _;
        let shot = self
            .cdp
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| other("no screenshot data"))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| other(format!("screenshot: {e}")))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)
    }

    /// Closes the DevTools connection (the tab goes with the browser).
    pub async fn close(self) {
        self.cdp.close().await;
    }
}

/// A DevTools session: commands matched to their answers by `id`; events kept in arrival
/// order.
#[derive(Debug)]
pub struct Cdp {
    ws: WebSocket,
    next_id: u64,
    events: VecDeque<Value>,
}

impl Cdp {
    /// Connects to a DevTools WebSocket URL (`ws://host:port/devtools/...`).
    pub async fn connect(ws_url: &str) -> io::Result<Self> {
        Ok(Self {
            ws: timeout(STEP_TIMEOUT, WebSocket::connect(ws_url))
                .await
                .map_err(|_| other(format!("connecting to {ws_url} timed out")))??,
            next_id: 0,
            events: VecDeque::new(),
        })
    }

    /// Sends a command without waiting for its answer; answers its id.
    pub async fn send(&mut self, method: &str, params: Value) -> io::Result<u64> {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params });
        self.ws.send_text(&message.to_string()).await?;
        Ok(id)
    }

    /// Sends a command and waits for its `result` (a protocol `error` is an `Err`).
    pub async fn call(&mut self, method: &str, params: Value) -> io::Result<Value> {
        let id = self.send(method, params).await?;
        let wait = async {
            loop {
                let text = self
                    .ws
                    .recv_text()
                    .await?
                    .ok_or_else(|| other(format!("connection closed awaiting {method}")))?;
                let message: Value = serde_json::from_str(&text)
                    .map_err(|e| other(format!("not JSON ({e}): {text}")))?;
                if message["id"].as_u64() == Some(id) {
                    if let Some(error) = message.get("error") {
                        return Err(other(format!("{method} failed: {error}")));
                    }
                    return Ok(message["result"].clone());
                }
                if message.get("method").is_some() {
                    self.events.push_back(message);
                }
            }
        };
        timeout(STEP_TIMEOUT, wait)
            .await
            .map_err(|_| other(format!("no answer to {method} within {STEP_TIMEOUT:?}")))?
    }

    /// Waits for the next event named `method` (events before it are dropped).
    pub async fn wait_event(&mut self, method: &str, within: Duration) -> io::Result<Value> {
        let wait = async {
            loop {
                while let Some(event) = self.events.pop_front() {
                    if event["method"] == method {
                        return Ok(event);
                    }
                }
                let text = self
                    .ws
                    .recv_text()
                    .await?
                    .ok_or_else(|| other(format!("connection closed awaiting {method}")))?;
                let message: Value = serde_json::from_str(&text)
                    .map_err(|e| other(format!("not JSON ({e}): {text}")))?;
                self.events.push_back(message);
            }
        };
        timeout(within, wait)
            .await
            .map_err(|_| other(format!("no {method} within {within:?}")))?
    }

    /// Closes the WebSocket politely (best effort).
    pub async fn close(mut self) {
        let _ = timeout(Duration::from_secs(2), self.ws.close()).await;
    }
}

/// A client WebSocket over plain TCP: text messages only, as DevTools uses.
#[derive(Debug)]
pub struct WebSocket {
    stream: BufReader<TcpStream>,
    /// Whether this side has sent its close frame.
    closing: bool,
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

impl WebSocket {
    /// Opens `ws://host:port/path` with the HTTP/1.1 upgrade handshake; the server must
    /// answer 101 with the accept key RFC 6455 derives from [`WS_KEY`].
    pub async fn connect(url: &str) -> io::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| other(format!("not a ws:// URL: {url}")))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        let mut stream = BufReader::new(stream);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.get_mut().write_all(request.as_bytes()).await?;
        // The answer's head, line by line, up to the blank line: nothing of the first frame
        // is consumed beyond it (it stays in the buffer).
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await? == 0 {
                return Err(other(format!(
                    "{url}: connection closed during the handshake: {head:?}"
                )));
            }
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            head.push(line);
        }
        let status = head.first().cloned().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("101") {
            return Err(other(format!("{url}: handshake refused: {head:?}")));
        }
        let accept = head.iter().find_map(|h| {
            let (name, value) = h.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-accept")
                .then(|| value.trim().to_owned())
        });
        if accept.as_deref() != Some(WS_ACCEPT) {
            return Err(other(format!(
                "{url}: wrong Sec-WebSocket-Accept: {head:?}"
            )));
        }
        Ok(Self {
            stream,
            closing: false,
        })
    }

    /// Sends one text message as a single masked frame.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send_frame(OP_TEXT, text.as_bytes()).await
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&len.to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask: [u8; 4] = rand::random();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let stream = self.stream.get_mut();
        stream.write_all(&frame).await?;
        stream.flush().await
    }

    /// One frame: FIN, opcode, unmasked payload.
    async fn read_frame(&mut self) -> io::Result<(bool, u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).await?;
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0F;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7F {
            126 => u64::from(self.stream.read_u16().await?),
            127 => self.stream.read_u64().await?,
            n => u64::from(n),
        };
        if len > MAX_MESSAGE {
            return Err(other(format!("frame of {len} bytes")));
        }
        let mask = if masked {
            let mut m = [0u8; 4];
            self.stream.read_exact(&mut m).await?;
            Some(m)
        } else {
            None
        };
        let mut payload = vec![0u8; len as usize];
        self.stream.read_exact(&mut payload).await?;
        if let Some(m) = mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= m[i % 4];
            }
        }
        Ok((fin, opcode, payload))
    }

    /// The next whole data message (fragments joined); pings are answered on the way.
    /// `None` once the server closes.
    pub async fn recv_text(&mut self) -> io::Result<Option<String>> {
        let mut message: Vec<u8> = Vec::new();
        let mut in_message = false;
        loop {
            let (fin, opcode, payload) = self.read_frame().await?;
            match opcode {
                OP_PING => self.send_frame(OP_PONG, &payload).await?,
                OP_PONG => {}
                OP_CLOSE => {
                    // Echo the close (status code only) unless it answers ours, and stop.
                    if !self.closing {
                        self.closing = true;
                        let code = payload.get(..2).unwrap_or(&[]).to_vec();
                        let _ = self.send_frame(OP_CLOSE, &code).await;
                    }
                    return Ok(None);
                }
                OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                    if (opcode == OP_CONTINUATION) != in_message {
                        return Err(other(format!(
                            "unexpected opcode {opcode} (in a fragmented message: {in_message})"
                        )));
                    }
                    in_message = true;
                    if (message.len() + payload.len()) as u64 > MAX_MESSAGE {
                        return Err(other("message too large"));
                    }
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message)
                            .map(Some)
                            .map_err(|e| other(format!("message not UTF-8: {e}")));
                    }
                }
                op => return Err(other(format!("unknown opcode {op}"))),
            }
        }
    }

    /// Sends a close frame (1000, normal closure) and waits for the server's.
    pub async fn close(&mut self) -> io::Result<()> {
        if self.closing {
            return Ok(());
        }
        self.closing = true;
        self.send_frame(OP_CLOSE, &1000u16.to_be_bytes()).await?;
        while self.recv_text().await?.is_some() {}
        Ok(())
    }
}
