//! The backend: echo or source per connection (the first byte says which),
//! on a single thread, until `--duration` is over.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{MODE_ECHO, MODE_SOURCE, check_duration};

/// Bytes read (echo) or written (source) per call.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Args)]
pub(crate) struct BackendArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18200")]
    listen: SocketAddr,
    /// Stop after this long (at most 1h).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    duration: Duration,
}

pub(super) async fn run(args: BackendArgs) -> anyhow::Result<()> {
    check_duration("--duration", args.duration, false)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let serve = async {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_one(stream));
                }
                // Out of file descriptors and the like: wait a little.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    // The listener runs until the duration is over.
    let _ = tokio::time::timeout(args.duration, serve).await;
    Ok(())
}

async fn serve_one(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut mode = [0u8; 1];
    if stream.read_exact(&mut mode).await.is_err() {
        return;
    }
    match mode {
        [MODE_ECHO] => {
            // A small first buffer: an idle connection holds little; grown
            // once a read fills it.
            let mut buf = vec![0u8; 512];
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if stream
                    .write_all(buf.get(..n).unwrap_or_default())
                    .await
                    .is_err()
                {
                    return;
                }
                if n == buf.len() && buf.len() < CHUNK {
                    buf.resize(CHUNK, 0);
                }
            }
        }
        [MODE_SOURCE] => {
            let buf = vec![0u8; CHUNK];
            while stream.write_all(&buf).await.is_ok() {}
        }
        _ => {}
    }
}
