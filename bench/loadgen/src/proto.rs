//! The wire protocols of the systems under test: how to subscribe over
//! each transport, how to publish, and where the benchmark payload
//! `{"seq": n, "t": µs}` sits in what each one delivers.
//!
//! - hub / floor: the hub's protocol, docs/PROTOCOL.md at the repository
//!   root (envelope `data` carries the payload).
//! - nchan: `/pub/{room}` publishes the raw body; `/sub/{room}` delivers it
//!   over WebSocket, EventSource, long-poll and interval-poll.
//! - socketio: Engine.IO v4 over WebSocket; `42["join",room]`,
//!   `42N["message",{room,data}]` acknowledged by `43N[...]`, deliveries
//!   as `42["message",payload]`; ping `2` answered `3`.

use futures_util::{SinkExt, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, WebSocketStream};

pub type Ws = WebSocketStream<TcpStream>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Hub,
    Floor,
    Nchan,
    SocketIo,
}

impl System {
    pub fn parse(s: &str) -> Option<System> {
        Some(match s {
            "hub" => System::Hub,
            "floor" => System::Floor,
            "nchan" => System::Nchan,
            "socketio" => System::SocketIo,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Sse,
    LongPoll,
}

impl Transport {
    pub fn parse(s: &str) -> Option<Transport> {
        Some(match s {
            "ws" => Transport::Ws,
            "sse" => Transport::Sse,
            "longpoll" => Transport::LongPoll,
            _ => return None,
        })
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

pub fn payload(seq: u64) -> Value {
    serde_json::json!({"seq": seq, "t": now_us()})
}

/// `(seq, t)` of a payload value.
pub fn seq_t(v: &Value) -> Option<(u64, u64)> {
    Some((v.get("seq")?.as_u64()?, v.get("t")?.as_u64()?))
}

/// The loopback source address for connection `i`: spreading connections
/// over 127.0.0.1–16 gives each its own ephemeral port range.
pub fn source_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 16) as u8))
}

fn host_port(base: &str) -> (String, u16) {
    let rest = base.trim_start_matches("http://");
    let (host, port) = rest.split_once(':').unwrap_or((rest, "80"));
    (
        host.to_string(),
        port.trim_end_matches('/').parse().unwrap_or(80),
    )
}

/// Opens a WebSocket from source address `i` to `path` on `base`.
pub async fn ws_connect(base: &str, path: &str, i: usize) -> Result<Ws, String> {
    let (host, port) = host_port(base);
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(source_ip(i), 0))
        .map_err(|e| e.to_string())?;
    let stream = sock.connect(addr).await.map_err(|e| e.to_string())?;
    let url = format!("ws://{host}:{port}{path}");
    let (ws, _) = client_async(url, stream).await.map_err(|e| e.to_string())?;
    Ok(ws)
}

pub fn ws_path(system: System, room: &str) -> String {
    match system {
        System::Hub | System::Floor => format!("/rooms/{room}/ws"),
        System::Nchan => format!("/sub/{room}"),
        System::SocketIo => "/socket.io/?EIO=4&transport=websocket".to_string(),
    }
}

/// Completes a system's WebSocket handshake: the hub's `welcome`, or
/// Socket.IO's connect and `join`. Returns once the socket is subscribed.
pub async fn ws_subscribe(system: System, ws: &mut Ws, room: &str) -> Result<(), String> {
    match system {
        System::Hub | System::Floor => loop {
            match next_text(ws).await? {
                t if t.contains("\"welcome\"") => return Ok(()),
                _ => continue,
            }
        },
        System::Nchan => Ok(()),
        System::SocketIo => {
            socketio_connect(ws).await?;
            let join = format!("421[\"join\",{}]", Value::from(room));
            ws.send(Message::text(join))
                .await
                .map_err(|e| e.to_string())?;
            // The server acknowledges the join once the socket is in the room.
            loop {
                let t = next_text(ws).await?;
                if t.starts_with("431") {
                    return Ok(());
                }
                if t == "2" {
                    ws.send(Message::text("3"))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
}

pub async fn socketio_connect(ws: &mut Ws) -> Result<(), String> {
    let open = next_text(ws).await?;
    if !open.starts_with('0') {
        return Err(format!("engine.io open expected, got {open}"));
    }
    ws.send(Message::text("40"))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let t = next_text(ws).await?;
        if t.starts_with("40") {
            return Ok(());
        }
    }
}

/// The next text frame; errors when the socket ends.
pub async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(_))) | None => return Err("socket closed".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// The payload in a text frame of `system`, if it carries one. Socket.IO
/// pings are answered by the caller (see `is_socketio_ping`).
pub fn ws_payload(system: System, text: &str) -> Option<Value> {
    match system {
        System::Hub | System::Floor => {
            let v: Value = serde_json::from_str(text).ok()?;
            (v.get("type")?.as_str()? == "message").then(|| v.get("data").cloned())?
        }
        System::Nchan => serde_json::from_str(text).ok(),
        System::SocketIo => {
            let body = text.strip_prefix("42")?;
            let v: Value = serde_json::from_str(body).ok()?;
            (v.get(0)?.as_str()? == "message").then(|| v.get(1).cloned())?
        }
    }
}

pub fn is_socketio_ping(system: System, text: &str) -> bool {
    system == System::SocketIo && text == "2"
}

pub fn sse_request(
    system: System,
    client: &reqwest::Client,
    base: &str,
    room: &str,
) -> reqwest::RequestBuilder {
    let url = match system {
        System::Nchan => format!("{base}/sub/{room}"),
        _ => format!("{base}/rooms/{room}/events"),
    };
    client.get(url).header("Accept", "text/event-stream")
}

/// Payloads in the `data:` lines of one SSE block.
pub fn sse_payload(system: System, block: &str) -> Option<Value> {
    let data: Vec<&str> = block
        .lines()
        .filter_map(|l| {
            l.strip_prefix("data:")
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
        })
        .collect();
    if data.is_empty() {
        return None;
    }
    let v: Value = serde_json::from_str(&data.join("\n")).ok()?;
    match system {
        System::Nchan => Some(v),
        _ => v.get("data").cloned(),
    }
}

/// HTTP clients bound to different loopback source addresses.
pub fn clients(n: usize) -> Vec<reqwest::Client> {
    (0..n)
        .map(|i| {
            reqwest::Client::builder()
                .local_address(source_ip(i))
                .pool_max_idle_per_host(1024)
                .timeout(Duration::from_secs(120))
                .build()
                .expect("reqwest client")
        })
        .collect()
}

/// Publishes one payload over HTTP; returns whether it was acknowledged.
pub async fn http_publish(
    system: System,
    client: &reqwest::Client,
    base: &str,
    room: &str,
    payload: &Value,
) -> bool {
    let req = match system {
        System::Hub | System::Floor => client
            .post(format!("{base}/rooms/{room}/messages"))
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "data": payload }).to_string()),
        System::Nchan => client
            .post(format!("{base}/pub/{room}"))
            .header("Content-Type", "application/json")
            .body(payload.to_string()),
        System::SocketIo => return false,
    };
    match req.send().await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

/// A Socket.IO connection used to publish with acknowledgements.
pub struct SocketIoPublisher {
    ws: Ws,
    next_ack: u64,
}

impl SocketIoPublisher {
    pub async fn connect(base: &str, i: usize) -> Result<Self, String> {
        let mut ws = ws_connect(base, &ws_path(System::SocketIo, ""), i).await?;
        socketio_connect(&mut ws).await?;
        Ok(SocketIoPublisher { ws, next_ack: 1 })
    }

    pub async fn publish(&mut self, room: &str, payload: &Value) -> bool {
        self.next_ack += 1;
        let id = self.next_ack;
        let frame = format!(
            "42{id}[\"message\",{}]",
            serde_json::json!({"room": room, "data": payload})
        );
        if self.ws.send(Message::text(frame)).await.is_err() {
            return false;
        }
        let want = format!("43{id}");
        loop {
            match next_text(&mut self.ws).await {
                Ok(t) if t.starts_with(&want) => return true,
                Ok(t) if t == "2" => {
                    let _ = self.ws.send(Message::text("3")).await;
                }
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// Long-poll state for one subscriber.
pub struct LongPoll {
    pub since: Option<u64>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// One long-poll round: returns the payloads it delivered.
pub async fn long_poll(
    system: System,
    client: &reqwest::Client,
    base: &str,
    room: &str,
    st: &mut LongPoll,
) -> Result<Vec<Value>, String> {
    match system {
        System::Hub | System::Floor => {
            let url = match st.since {
                Some(s) => format!("{base}/rooms/{room}/messages?since={s}&wait=25&limit=1000"),
                None => format!("{base}/rooms/{room}/messages?limit=1"),
            };
            let r = client.get(url).send().await.map_err(|e| e.to_string())?;
            if r.status().as_u16() != 200 {
                return Ok(vec![]);
            }
            let body: Value = r.json_value().await?;
            let first = st.since.is_none();
            st.since = body.get("last_id").and_then(Value::as_u64);
            if first {
                return Ok(vec![]);
            }
            Ok(body["messages"]
                .as_array()
                .map(|m| m.iter().filter_map(|e| e.get("data").cloned()).collect())
                .unwrap_or_default())
        }
        System::Nchan => {
            let mut headers = HeaderMap::new();
            if let Some(e) = &st.etag {
                headers.insert(
                    "If-None-Match",
                    HeaderValue::from_str(e).map_err(|e| e.to_string())?,
                );
            }
            if let Some(lm) = &st.last_modified {
                headers.insert(
                    "If-Modified-Since",
                    HeaderValue::from_str(lm).map_err(|e| e.to_string())?,
                );
            }
            let r = client
                .get(format!("{base}/sub/{room}"))
                .headers(headers)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let h = |k: &str| {
                r.headers()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            if let Some(e) = h("etag") {
                st.etag = Some(e);
            }
            if let Some(lm) = h("last-modified") {
                st.last_modified = Some(lm);
            }
            if status != 200 {
                return Ok(vec![]);
            }
            let text = r.text().await.map_err(|e| e.to_string())?;
            Ok(serde_json::from_str(&text).ok().into_iter().collect())
        }
        System::SocketIo => Err("socket.io has no long-poll subscriber here".into()),
    }
}

trait JsonValue {
    async fn json_value(self) -> Result<Value, String>;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Result<Value, String> {
        let text = self.text().await.map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }
}
