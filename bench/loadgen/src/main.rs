//! hub-loadgen: drives one system under test through one scenario and
//! prints one JSON line of results.
//!
//! ```text
//! hub-loadgen fanout   --system hub --url http://127.0.0.1:8787 --pid PID --transport ws --subs 1000 --rate 50 --secs 10
//! hub-loadgen idle     --system nchan --url … --pid PID --transport sse --subs 5000
//! hub-loadgen poll     --system hub --url … --pid PID --subs 500 --secs 10
//! hub-loadgen publish  --system floor --url … --pid PID --concurrency 16 --subs 100 --secs 10
//! hub-loadgen cost304  --system hub --url … --pid PID --concurrency 16 --secs 5
//! ```
//! Every (message, subscriber) delivery is accounted: latency from publish
//! to receive, completeness, duplicates, out-of-order.

mod procfs;
mod proto;
mod stats;

use futures_util::{SinkExt, StreamExt};
use proto::{System, Transport};
use serde_json::{json, Value};
use stats::{SubStats, Totals};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Connections opened at once: bounded so the server's accept queue and
/// the runtime are not flooded (which measures the flood, not the system).
const CONNECT_CONCURRENCY: usize = 64;

struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> (String, Args) {
        let mut it = std::env::args().skip(1);
        let scenario = it.next().unwrap_or_default();
        let mut map = HashMap::new();
        while let Some(k) = it.next() {
            if let Some(name) = k.strip_prefix("--") {
                map.insert(name.to_string(), it.next().unwrap_or_default());
            }
        }
        (scenario, Args(map))
    }
    fn s(&self, k: &str, d: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn n(&self, k: &str, d: u64) -> u64 {
        self.0.get(k).and_then(|v| v.parse().ok()).unwrap_or(d)
    }
}

#[tokio::main]
async fn main() {
    let (scenario, args) = Args::parse();
    let system =
        System::parse(&args.s("system", "hub")).expect("--system hub|floor|nchan|socketio");
    let base = args.s("url", "http://127.0.0.1:8787");
    let pid = args.n("pid", 0) as u32;
    let room = args.s("room", &format!("bench-{}", proto::now_us()));
    let result = match scenario.as_str() {
        "fanout" => fanout(system, &base, &room, &args).await,
        "idle" => idle(system, &base, &room, pid, &args).await,
        "poll" => interval_poll(system, &base, &room, pid, &args).await,
        "publish" => publish_throughput(system, &base, &room, pid, &args).await,
        "cost304" => cost304(system, &base, &room, pid, &args).await,
        other => {
            eprintln!("unknown scenario {other:?}");
            std::process::exit(2);
        }
    };
    let mut out = json!({"scenario": scenario, "system": args.s("system", "hub"), "label": args.s("label", "")});
    if let (Value::Object(o), Value::Object(r)) = (&mut out, result) {
        o.extend(r);
    }
    println!("{out}");
}

/// When any subscriber last received anything (µs, `proto::now_us`).
static LAST_FRAME_US: AtomicU64 = AtomicU64::new(0);

fn heard_from_server() {
    LAST_FRAME_US.store(proto::now_us(), Ordering::Relaxed);
}

/// Waits until the subscribers have received nothing for `quiet` (at most
/// `bound`); returns how long that took. The connect phase has traffic of
/// its own (the hub announces each join to every member), which a fan-out
/// measurement should not count against the messages it publishes.
async fn until_quiet(quiet: Duration, bound: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let since_last = proto::now_us().saturating_sub(LAST_FRAME_US.load(Ordering::Relaxed));
        if since_last >= quiet.as_micros() as u64 || started.elapsed() >= bound {
            return started.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens `n` subscribers over `transport`; each records what it receives
/// until `stop` flips. Returns once all are subscribed.
async fn subscribers(
    system: System,
    transport: Transport,
    base: &str,
    room: &str,
    n: usize,
    capacity: usize,
    stop: watch::Receiver<bool>,
) -> (Vec<JoinHandle<SubStats>>, u64) {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let ready = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let clients = proto::clients(16);
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (gate, ready, failed, mut stop) =
            (gate.clone(), ready.clone(), failed.clone(), stop.clone());
        let (base, room, client) = (
            base.to_string(),
            room.to_string(),
            clients[i % clients.len()].clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut st = SubStats::new(capacity);
            let permit = gate.acquire_owned().await.expect("semaphore");
            match transport {
                Transport::Ws => {
                    let ws = proto::ws_connect(&base, &proto::ws_path(system, &room), i).await;
                    let mut ws = match ws {
                        Ok(mut ws) => match proto::ws_subscribe(system, &mut ws, &room).await {
                            Ok(()) => ws,
                            Err(_) => { failed.fetch_add(1, Ordering::SeqCst); return st; }
                        },
                        Err(_) => { failed.fetch_add(1, Ordering::SeqCst); return st; }
                    };
                    drop(permit);
                    ready.fetch_add(1, Ordering::SeqCst);
                    loop {
                        tokio::select! {
                            _ = stop.changed() => break,
                            msg = ws.next() => match msg {
                                Some(Ok(Message::Text(t))) => {
                                    heard_from_server();
                                    let now = proto::now_us();
                                    if proto::is_socketio_ping(system, &t) {
                                        let _ = ws.send(Message::text("3")).await;
                                    } else if let Some((seq, t0)) = proto::ws_payload(system, &t).as_ref().and_then(proto::seq_t) {
                                        st.record(seq, t0, now);
                                    }
                                }
                                Some(Ok(_)) => {}
                                _ => break,
                            }
                        }
                    }
                    let _ = ws.close(None).await;
                }
                Transport::Sse => {
                    let resp = proto::sse_request(system, &client, &base, &room).send().await;
                    let Ok(resp) = resp.and_then(|r| r.error_for_status()) else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return st;
                    };
                    drop(permit);
                    ready.fetch_add(1, Ordering::SeqCst);
                    let mut body = resp.bytes_stream();
                    let mut buf = String::new();
                    loop {
                        tokio::select! {
                            _ = stop.changed() => break,
                            chunk = body.next() => match chunk {
                                Some(Ok(bytes)) => {
                                    heard_from_server();
                                    let now = proto::now_us();
                                    buf.push_str(&String::from_utf8_lossy(&bytes));
                                    while let Some(end) = buf.find("\n\n") {
                                        let block: String = buf.drain(..end + 2).collect();
                                        if let Some((seq, t0)) = proto::sse_payload(system, &block).as_ref().and_then(proto::seq_t) {
                                            st.record(seq, t0, now);
                                        }
                                    }
                                }
                                _ => break,
                            }
                        }
                    }
                }
                Transport::LongPoll => {
                    let mut lp = proto::LongPoll { since: None, etag: None, last_modified: None };
                    if system != System::Nchan && proto::long_poll(system, &client, &base, &room, &mut lp).await.is_err() {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return st;
                    }
                    drop(permit);
                    ready.fetch_add(1, Ordering::SeqCst);
                    loop {
                        tokio::select! {
                            _ = stop.changed() => break,
                            got = proto::long_poll(system, &client, &base, &room, &mut lp) => match got {
                                Ok(payloads) => {
                                    let now = proto::now_us();
                                    for p in payloads {
                                        if let Some((seq, t0)) = proto::seq_t(&p) { st.record(seq, t0, now); }
                                    }
                                }
                                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                            }
                        }
                    }
                }
            }
            st
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < n as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if system == System::Nchan && transport == Transport::LongPoll {
        // nchan's first long-poll request is the subscription itself and
        // returns nothing until a message: give the requests time to land.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (handles, failed.load(Ordering::SeqCst))
}

/// A publisher over each system's own publish path.
enum Publisher {
    Http(System, reqwest::Client),
    // Boxed: the Socket.IO publisher is a whole socket, the HTTP one a handle.
    SocketIo(Box<proto::SocketIoPublisher>),
}

impl Publisher {
    async fn new(system: System, base: &str, i: usize) -> Publisher {
        match system {
            System::SocketIo => Publisher::SocketIo(Box::new(
                proto::SocketIoPublisher::connect(base, 1000 + i)
                    .await
                    .expect("socket.io publisher"),
            )),
            _ => Publisher::Http(system, proto::clients(1).remove(0)),
        }
    }
    async fn publish(&mut self, base: &str, room: &str, seq: u64) -> bool {
        let p = proto::payload(seq);
        match self {
            Publisher::Http(system, client) => {
                proto::http_publish(*system, client, base, room, &p).await
            }
            Publisher::SocketIo(s) => s.publish(room, &p).await,
        }
    }
}

async fn fanout(system: System, base: &str, room: &str, args: &Args) -> Value {
    let transport =
        Transport::parse(&args.s("transport", "ws")).expect("--transport ws|sse|longpoll");
    let (n, rate, secs) = (
        args.n("subs", 100) as usize,
        args.n("rate", 50),
        args.n("secs", 10),
    );
    let total = (rate * secs) as usize;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (handles, failed) = subscribers(system, transport, base, room, n, total + 1, stop_rx).await;
    let settle_secs = until_quiet(Duration::from_millis(500), Duration::from_secs(60)).await;
    // A mark for tools that watch the run (bench/profile.mjs profiles from here).
    eprintln!("subscribed: publishing");
    let mut publisher = Publisher::new(system, base, 0).await;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut published = 0u64;
    for seq in 0..total as u64 {
        tick.tick().await;
        if publisher.publish(base, room, seq).await {
            published += 1;
        }
    }
    let publish_secs = started.elapsed().as_secs_f64();
    eprintln!("published: draining");
    let expected = published * (n as u64 - failed);
    // Drain: wait until every delivery arrived or nothing new came for 5 s.
    let all: Vec<SubStats> = drain(handles, stop_tx, Duration::from_secs(5), expected).await;
    let totals = Totals::merge(&all);
    json!({"transport": args.s("transport", "ws"), "subs": n, "failed_subs": failed, "rate": rate, "secs": secs,
           "settle_secs": settle_secs, "published": published, "publish_secs": publish_secs, "result": totals.json(expected)})
}

/// Stops the subscribers once deliveries stop growing (or all arrived).
async fn drain(
    handles: Vec<JoinHandle<SubStats>>,
    stop: watch::Sender<bool>,
    quiet: Duration,
    _expected: u64,
) -> Vec<SubStats> {
    // Subscribers keep their counts to themselves until stopped, so wait a
    // fixed quiet period after the last publish, bounded.
    tokio::time::sleep(quiet).await;
    let _ = stop.send(true);
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(s) = h.await {
            out.push(s);
        }
    }
    out
}

async fn idle(system: System, base: &str, room: &str, pid: u32, args: &Args) -> Value {
    let transport = Transport::parse(&args.s("transport", "ws")).expect("--transport ws|sse");
    let n = args.n("subs", 1000) as usize;
    let before = procfs::rss_bytes(pid);
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let (handles, failed) = subscribers(system, transport, base, room, n, 1, stop_rx).await;
    let open_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = procfs::rss_bytes(pid);
    let held = n as u64 - failed;
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    json!({"transport": args.s("transport", "ws"), "subs": n, "held": held, "open_secs": open_secs,
           "rss_before": before, "rss_after": after,
           "bytes_per_conn": after.saturating_sub(before).checked_div(held).unwrap_or(0)})
}

async fn interval_poll(system: System, base: &str, room: &str, pid: u32, args: &Args) -> Value {
    let (n, secs) = (args.n("subs", 500) as usize, args.n("secs", 10));
    let clients = proto::clients(16);
    let ok200 = Arc::new(AtomicU64::new(0));
    let not_modified = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut publisher = Publisher::new(system, base, 0).await;
    publisher.publish(base, room, 0).await;
    let cpu0 = procfs::cpu_micros(pid);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..n {
        let (client, base, room) = (clients[i % 16].clone(), base.to_string(), room.to_string());
        let (ok200, nm, errors) = (ok200.clone(), not_modified.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the pollers over the first second.
            tokio::time::sleep(Duration::from_micros((i as u64 * 1_000_000) / n as u64)).await;
            let mut etag: Option<String> = None;
            let mut last_modified: Option<String> = None;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while Instant::now() < deadline {
                tick.tick().await;
                let url = match system {
                    // nchan serves interval polling on its own location:
                    // on /sub it would hold the request as a long poll.
                    System::Nchan => format!("{base}/poll/{room}"),
                    _ => format!("{base}/rooms/{room}/messages?limit=50"),
                };
                let mut req = client.get(url);
                if let Some(e) = &etag {
                    req = req.header("If-None-Match", e);
                }
                if let Some(lm) = &last_modified {
                    req = req.header("If-Modified-Since", lm);
                }
                match req.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        if let Some(e) = r.headers().get("etag").and_then(|v| v.to_str().ok()) {
                            etag = Some(e.to_string());
                        }
                        if let Some(lm) = r
                            .headers()
                            .get("last-modified")
                            .and_then(|v| v.to_str().ok())
                        {
                            last_modified = Some(lm.to_string());
                        }
                        let _ = r.bytes().await;
                        match status {
                            200 => ok200.fetch_add(1, Ordering::Relaxed),
                            304 => nm.fetch_add(1, Ordering::Relaxed),
                            _ => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // A new message every few seconds: most polls find nothing new (304),
    // some find news (200), as with rare updates.
    let every = Duration::from_secs(args.n("publish-every", 5));
    let mut seq = 1;
    while Instant::now() + every < deadline {
        tokio::time::sleep(every).await;
        publisher.publish(base, room, seq).await;
        seq += 1;
    }
    for t in tasks {
        let _ = t.await;
    }
    let cpu = procfs::cpu_micros(pid) - cpu0;
    let (a, b) = (
        ok200.load(Ordering::Relaxed),
        not_modified.load(Ordering::Relaxed),
    );
    json!({"subs": n, "secs": secs, "status_200": a, "status_304": b, "errors": errors.load(Ordering::Relaxed),
           "server_cpu_ms": cpu as f64 / 1000.0,
           "cpu_ms_per_1000_requests": if a + b > 0 { cpu as f64 / (a + b) as f64 } else { 0.0 }})
}

async fn publish_throughput(
    system: System,
    base: &str,
    room: &str,
    pid: u32,
    args: &Args,
) -> Value {
    let (conc, secs, n) = (
        args.n("concurrency", 16) as usize,
        args.n("secs", 10),
        args.n("subs", 0) as usize,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let (handles, failed) =
        subscribers(system, Transport::Ws, base, room, n, 1_000_000, stop_rx).await;
    // As in fan-out: the connect phase's own traffic (the hub announces
    // every join to every member) is drained before the measured window,
    // so the CPU counted is the publishes' and their deliveries'.
    let settle_secs = if n > 0 {
        until_quiet(Duration::from_millis(500), Duration::from_secs(60)).await
    } else {
        0.0
    };
    // The marks tools that watch the run wait for (as in fan-out).
    eprintln!("subscribed: publishing");
    let acked = Arc::new(AtomicU64::new(0));
    let failed_pub = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let cpu0 = procfs::cpu_micros(pid);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..conc {
        let (base, room) = (base.to_string(), room.to_string());
        let (acked, failed_pub, next) = (acked.clone(), failed_pub.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut p = Publisher::new(system, &base, i).await;
            while Instant::now() < deadline {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if p.publish(&base, &room, seq).await {
                    acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed_pub.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = procfs::cpu_micros(pid) - cpu0;
    eprintln!("published: draining");
    let acked = acked.load(Ordering::Relaxed);
    let all = drain(handles, stop_tx, Duration::from_secs(3), 0).await;
    let totals = Totals::merge(&all);
    json!({"concurrency": conc, "subs": n, "failed_subs": failed, "settle_secs": settle_secs, "secs": elapsed, "acked": acked,
           "failed": failed_pub.load(Ordering::Relaxed), "per_sec": acked as f64 / elapsed,
           "server_cpu_ms": cpu as f64 / 1000.0,
           "fanout": if n > 0 { totals.json(acked * (n as u64 - failed)) } else { Value::Null }})
}

async fn cost304(system: System, base: &str, room: &str, pid: u32, args: &Args) -> Value {
    let (conc, secs) = (args.n("concurrency", 16) as usize, args.n("secs", 5));
    let client = proto::clients(1).remove(0);
    let mut publisher = Publisher::new(system, base, 0).await;
    for seq in 0..50 {
        publisher.publish(base, room, seq).await;
    }
    let url = format!("{base}/rooms/{room}/messages?limit=50");
    let etag = client
        .get(&url)
        .send()
        .await
        .ok()
        .and_then(|r| {
            r.headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (label, conditional) in [("full_200", false), ("not_modified_304", true)] {
        let count = Arc::new(AtomicU64::new(0));
        let cpu0 = procfs::cpu_micros(pid);
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for _ in 0..conc {
            let (client, url, etag, count) =
                (client.clone(), url.clone(), etag.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let mut req = client.get(&url);
                    if conditional {
                        req = req.header("If-None-Match", &etag);
                    }
                    if let Ok(r) = req.send().await {
                        let want = if conditional { 304 } else { 200 };
                        if r.status().as_u16() == want && r.bytes().await.is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let n = count.load(Ordering::Relaxed);
        let cpu = procfs::cpu_micros(pid) - cpu0;
        out.insert(
            label.into(),
            json!({"requests": n, "per_sec": n as f64 / t0.elapsed().as_secs_f64(),
            "server_cpu_us_per_request": if n > 0 { cpu as f64 / n as f64 } else { 0.0 }}),
        );
    }
    let c200 = out["full_200"]["server_cpu_us_per_request"]
        .as_f64()
        .unwrap_or(0.0);
    let c304 = out["not_modified_304"]["server_cpu_us_per_request"]
        .as_f64()
        .unwrap_or(0.0);
    out.insert(
        "ratio_304_to_200".into(),
        json!(if c200 > 0.0 { c304 / c200 } else { 0.0 }),
    );
    Value::Object(out)
}
