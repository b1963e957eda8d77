//! A small closed-loop HTTP/1.1 load generator for machines that have no wrk (a borrowed
//! GPU machine reaches no package registry): C connections, each sending the next request
//! as soon as the last is answered, for S seconds, keep-alive. The request is an Open
//! Inference Protocol binary request for one FP32 input of the given shape (a fixed
//! pseudo-random tensor), as tritonclient sends by default. It prints one JSON line:
//! requests, non-2xx answers, connection errors, requests/s, P50 and P99 in ms.
//!
//!     cargo run --release --example load -- URL INPUT SHAPE CONNECTIONS SECONDS
//!     (e.g. http://127.0.0.1:8080/v2/models/squeezenet1_1/infer input 1,3,224,224 32 15)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, input, shape, connections, seconds] = args.as_slice() else {
        anyhow::bail!("usage: load URL INPUT SHAPE CONNECTIONS SECONDS");
    };
    let (host, path) = split_url(url)?;
    let shape: Vec<usize> = shape.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let request = oip_binary_request(&host, &path, input, &shape);
    let until = Instant::now() + Duration::from_secs_f64(seconds.parse()?);
    let started = Instant::now();
    let threads: Vec<_> = (0..connections.parse::<usize>()?)
        .map(|_| {
            let (host, request) = (host.clone(), request.clone());
            std::thread::spawn(move || client(&host, &request, until))
        })
        .collect();
    let mut total = Tally::default();
    for thread in threads {
        let tally = thread.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        total.latencies.extend(tally.latencies);
        total.non_2xx += tally.non_2xx;
        total.errors += tally.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    total.latencies.sort_unstable();
    let quantile = |q: f64| {
        let i = ((total.latencies.len() as f64 * q) as usize).min(total.latencies.len().saturating_sub(1));
        total.latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{{\"requests\": {}, \"non_2xx\": {}, \"errors\": {}, \"seconds\": {elapsed:.2}, \"rps\": {:.1}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}}}",
        total.latencies.len(),
        total.non_2xx,
        total.errors,
        total.latencies.len() as f64 / elapsed,
        quantile(0.50),
        quantile(0.99)
    );
    Ok(())
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    non_2xx: u64,
    errors: u64,
}

/// `http://HOST:PORT/PATH` as ("HOST:PORT", "/PATH").
fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("{url}: only http:// URLs"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((host.to_string(), format!("/{path}")))
}

/// The whole request: headers, the JSON header of the binary form, the raw floats.
fn oip_binary_request(host: &str, path: &str, input: &str, shape: &[usize]) -> Vec<u8> {
    let count: usize = shape.iter().product();
    let header = format!(
        "{{\"inputs\":[{{\"name\":\"{input}\",\"shape\":{shape:?},\"datatype\":\"FP32\",\"parameters\":{{\"binary_data_size\":{}}}}}]}}",
        count * 4
    );
    let mut body = header.clone().into_bytes();
    for i in 0..count {
        body.extend_from_slice(&(((i * 7919 % 1000) as f32 / 1000.0) - 0.5).to_le_bytes());
    }
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
         Inference-Header-Content-Length: {}\r\nContent-Length: {}\r\n\r\n",
        header.len(),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

/// One connection's loop until `until`; reconnects after an error or a closed connection.
fn client(host: &str, request: &[u8], until: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut connection: Option<BufReader<TcpStream>> = None;
    while Instant::now() < until {
        let reader = match connection.as_mut() {
            Some(reader) => reader,
            None => match TcpStream::connect(host) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    connection.insert(BufReader::new(stream))
                }
                Err(_) => {
                    tally.errors += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let sent = Instant::now();
        match exchange(reader, request) {
            Ok((status, keep_alive)) => {
                tally.latencies.push(sent.elapsed());
                tally.non_2xx += u64::from(!(200..300).contains(&status));
                if !keep_alive {
                    connection = None;
                }
            }
            Err(_) => {
                tally.errors += 1;
                connection = None;
            }
        }
    }
    tally
}

/// Sends the request and reads the whole answer: its status, and whether the connection
/// stays open.
fn exchange(reader: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<(u16, bool)> {
    reader.get_mut().write_all(request)?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
    let (mut length, mut keep_alive) = (0usize, true);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().map_err(|_| std::io::ErrorKind::InvalidData)?,
            "connection" => keep_alive = !value.trim().eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, keep_alive))
}
