//! Tests of the unix-socket listener: the `:authority` rewriter fed
//! arbitrary splits and hostile input, and socket creation.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use bytes::BytesMut;
use loona_hpack::{Decoder, Encoder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::authority::{MAX_FRAME_SIZE, PREFACE, RewriteError, Rewriter};
use super::{UdsError, bind};

const LIMIT: usize = 16 * 1024;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn request_headers(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
        (":authority", authority),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
        ("workload.spiffe.io", "true"),
        (
            "user-agent",
            "grpc-python/1.70 grpc-c/45.0.0 (linux; chttp2)",
        ),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn encode(encoder: &mut Encoder<'_>, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

/// Splits `block` into HEADERS (padded and with priority when asked) and
/// CONTINUATION frames of `chunk` bytes.
fn header_frames(
    stream: u32,
    block: &[u8],
    chunk: usize,
    padded: bool,
    priority: bool,
    end_stream: bool,
) -> Vec<u8> {
    let mut parts = block.chunks(chunk.max(1)).collect::<Vec<_>>();
    if parts.is_empty() {
        parts.push(&[]);
    }
    let mut out = Vec::new();
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate() {
        let end_headers = if i == last { 0x4 } else { 0 };
        if i == 0 {
            let mut payload = Vec::new();
            let mut flags = end_headers;
            if end_stream {
                flags |= 0x1;
            }
            if padded {
                flags |= 0x8;
                payload.push(7);
            }
            if priority {
                flags |= 0x20;
                payload.extend_from_slice(&[0x80, 0, 0, 0, 15]);
            }
            payload.extend_from_slice(part);
            if padded {
                payload.extend_from_slice(&[0; 7]);
            }
            out.extend(frame(0x1, flags, stream, &payload));
        } else {
            out.extend(frame(0x9, end_headers, stream, part));
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Parsed {
    Headers {
        stream: u32,
        end_stream: bool,
        priority: Option<Vec<u8>>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    },
    Other {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    },
}

/// Parses the rewriter's output as h2 would, checking that every header
/// block decodes with a *fresh* decoder (no dynamic-table state) and that
/// no frame is larger than the server's frame size.
fn parse_output(mut bytes: &[u8]) -> Vec<Parsed> {
    assert!(bytes.starts_with(PREFACE));
    bytes = &bytes[PREFACE.len()..];
    let mut frames = Vec::new();
    // (stream, END_STREAM, priority fields, block so far)
    type Open = (u32, bool, Option<Vec<u8>>, Vec<u8>);
    let mut open: Option<Open> = None;
    while !bytes.is_empty() {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        assert!(len <= MAX_FRAME_SIZE, "frame of {len} bytes");
        let (kind, flags) = (bytes[3], bytes[4]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        let payload = bytes[9..9 + len].to_vec();
        bytes = &bytes[9 + len..];
        match kind {
            0x1 => {
                assert!(open.is_none());
                assert_eq!(flags & 0x8, 0, "output is never padded");
                let (priority, fragment) = if flags & 0x20 != 0 {
                    (Some(payload[..5].to_vec()), payload[5..].to_vec())
                } else {
                    (None, payload)
                };
                open = Some((stream, flags & 0x1 != 0, priority, fragment));
            }
            0x9 => open
                .as_mut()
                .expect("continuation in a block")
                .3
                .extend(payload),
            _ => {
                assert!(open.is_none());
                frames.push(Parsed::Other {
                    kind,
                    flags,
                    stream,
                    payload,
                });
                continue;
            }
        }
        if flags & 0x4 != 0 {
            let (stream, end_stream, priority, block) = open.take().unwrap();
            let headers = Decoder::new().decode(&block).expect("stateless block");
            frames.push(Parsed::Headers {
                stream,
                end_stream,
                priority,
                headers,
            });
        }
    }
    assert!(open.is_none());
    frames
}

fn run(input: &[u8], rng: &mut StdRng) -> Result<Vec<u8>, RewriteError> {
    let mut rewriter = Rewriter::new(LIMIT);
    let mut pending = BytesMut::new();
    let mut out = BytesMut::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = rng.random_range(1..=rest.len().min(64));
        pending.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        rewriter.process(&mut pending, &mut out)?;
    }
    Ok(out.to_vec())
}

fn with_authority(headers: &[(Vec<u8>, Vec<u8>)], authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .iter()
        .map(|(n, v)| {
            if n == b":authority" {
                (n.clone(), authority.as_bytes().to_vec())
            } else {
                (n.clone(), v.clone())
            }
        })
        .collect()
}

#[test]
fn rewrites_the_socket_path_authority_across_random_splits() {
    let mut rng = StdRng::seed_from_u64(15);
    for round in 0..200 {
        let mut encoder = Encoder::new();
        let first = request_headers("/tmp/agent/api.sock");
        let second = request_headers("%2Frun%2Fspire%2Fsockets%2Fapi.sock");
        let kept = request_headers("localhost:8080");
        let padded = round % 2 == 0;
        let priority = round % 3 == 0;
        let chunk = rng.random_range(1..40);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS
        input.extend(header_frames(
            1,
            &encode(&mut encoder, &first),
            chunk,
            padded,
            priority,
            false,
        ));
        input.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0])); // DATA, END_STREAM
        // The second block reuses the client's dynamic table entries.
        input.extend(header_frames(
            3,
            &encode(&mut encoder, &second),
            chunk,
            !padded,
            false,
            true,
        ));
        input.extend(header_frames(
            5,
            &encode(&mut encoder, &kept),
            10_000,
            false,
            priority,
            true,
        ));
        input.extend(frame(0x8, 0, 0, &[0, 1, 0, 0])); // WINDOW_UPDATE

        let out = run(&input, &mut rng).unwrap();
        let frames = parse_output(&out);
        let expected = vec![
            Parsed::Other {
                kind: 0x4,
                flags: 0,
                stream: 0,
                payload: vec![0, 3, 0, 0, 0, 100],
            },
            Parsed::Headers {
                stream: 1,
                end_stream: false,
                priority: priority.then(|| vec![0x80, 0, 0, 0, 15]),
                headers: with_authority(&first, "localhost"),
            },
            Parsed::Other {
                kind: 0x0,
                flags: 0x1,
                stream: 1,
                payload: vec![0; 5],
            },
            Parsed::Headers {
                stream: 3,
                end_stream: true,
                priority: None,
                headers: with_authority(&second, "localhost"),
            },
            Parsed::Headers {
                stream: 5,
                end_stream: true,
                priority: priority.then(|| vec![0x80, 0, 0, 0, 15]),
                headers: kept.clone(),
            },
            Parsed::Other {
                kind: 0x8,
                flags: 0,
                stream: 0,
                payload: vec![0, 1, 0, 0],
            },
        ];
        assert_eq!(frames, expected, "round {round}");
    }
}

#[test]
fn large_blocks_are_re_split_into_frames_of_the_server_size() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut headers = request_headers("/tmp/x.sock");
    // Near the limit after decoding, but over one frame once re-encoded.
    headers.push((b"x-big".to_vec(), vec![b'a'; 15_000]));
    let block = encode(&mut Encoder::new(), &headers);
    let mut input = PREFACE.to_vec();
    input.extend(header_frames(1, &block, 4_000, false, true, true));
    let frames = parse_output(&run(&input, &mut rng).unwrap());
    assert_eq!(frames.len(), 1);
    let Parsed::Headers { headers: got, .. } = &frames[0] else {
        panic!("{frames:?}")
    };
    assert_eq!(got, &with_authority(&headers, "localhost"));
}

#[test]
fn hostile_input_is_a_connection_error() {
    let mut rng = StdRng::seed_from_u64(3);
    let block = encode(&mut Encoder::new(), &request_headers("/x"));
    let with_preface = |frames: Vec<u8>| {
        let mut v = PREFACE.to_vec();
        v.extend(frames);
        v
    };
    let cases: Vec<(&str, Vec<u8>, RewriteError)> = vec![
        (
            "bad preface",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            RewriteError::Preface,
        ),
        (
            "push promise",
            with_preface(frame(0x5, 0x4, 1, &[0, 0, 0, 2])),
            RewriteError::PushPromise,
        ),
        (
            "stray continuation",
            with_preface(frame(0x9, 0x4, 1, &block)),
            RewriteError::StrayContinuation,
        ),
        (
            "headers on stream 0",
            with_preface(frame(0x1, 0x4, 0, &block)),
            RewriteError::StreamZero,
        ),
        (
            "interrupted block",
            with_preface([frame(0x1, 0, 1, &block[..3]), frame(0x0, 0, 1, b"x")].concat()),
            RewriteError::Interrupted {
                stream: 1,
                frame_type: 0,
            },
        ),
        (
            "continuation on another stream",
            with_preface(
                [
                    frame(0x1, 0, 1, &block[..3]),
                    frame(0x9, 0x4, 3, &block[3..]),
                ]
                .concat(),
            ),
            RewriteError::Interrupted {
                stream: 1,
                frame_type: 0x9,
            },
        ),
        (
            "padding over the payload",
            with_preface(frame(0x1, 0x4 | 0x8, 1, &[200, 1, 2])),
            RewriteError::BadPadding,
        ),
        (
            "priority cut short",
            with_preface(frame(0x1, 0x4 | 0x20, 1, &[0, 0])),
            RewriteError::BadPadding,
        ),
        (
            "empty padded payload",
            with_preface(frame(0x1, 0x4 | 0x8, 1, &[])),
            RewriteError::BadPadding,
        ),
        (
            "huge single frame",
            with_preface(frame(0x1, 0x4, 1, &vec![0; LIMIT + 300])),
            RewriteError::BlockTooLarge { limit: LIMIT },
        ),
    ];
    for (name, input, expected) in cases {
        assert_eq!(run(&input, &mut rng).unwrap_err(), expected, "{name}");
    }

    // A CONTINUATION flood is refused once the block passes the limit,
    // before it is buffered whole.
    let mut flood = with_preface(frame(0x1, 0, 1, &[0x82]));
    for _ in 0..(LIMIT / 1000 + 2) {
        flood.extend(frame(0x9, 0, 1, &[0x82; 1000]));
    }
    assert_eq!(
        run(&flood, &mut rng).unwrap_err(),
        RewriteError::BlockTooLarge { limit: LIMIT }
    );

    // An HPACK bomb: one 4 KiB dynamic entry referenced many times expands
    // far past the header list limit.
    let mut bomb = vec![0x40, 5];
    bomb.extend_from_slice(b"x-pad");
    // Value length 3968 = 127 + 1 + 30 * 128 (RFC 7541 §5.1): an entry of
    // 5 + 3968 + 32 bytes, which fits the 4096-byte table.
    bomb.push(0x7f);
    bomb.push(0x81);
    bomb.push(0x1e);
    bomb.extend(vec![b'a'; 3968]);
    bomb.extend(vec![0xbe; 100]); // index 62: the entry just added
    let input = with_preface(header_frames(1, &bomb, 16_000, false, false, true));
    assert_eq!(
        run(&input, &mut rng).unwrap_err(),
        RewriteError::ListTooLarge { limit: LIMIT }
    );

    // A malformed HPACK block (index 0) and a dynamic table size update
    // to 4097, over the advertised 4096.
    for block in [vec![0x80], vec![0x3f, 0xe2, 0x1f, 0x82]] {
        let input = with_preface(frame(0x1, 0x4, 1, &block));
        assert!(
            matches!(run(&input, &mut rng), Err(RewriteError::Hpack(_))),
            "{block:?}"
        );
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(99);
    for _ in 0..2_000 {
        let len = rng.random_range(0..600);
        let mut input = PREFACE.to_vec();
        // Mostly frame-shaped garbage: small lengths so frames complete.
        while input.len() < PREFACE.len() + len {
            let kind = [0x0, 0x1, 0x4, 0x8, 0x9, rng.random()][rng.random_range(0..6)];
            let payload: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
            input.extend(frame(kind, rng.random(), rng.random_range(0..4), &payload));
        }
        let _ = run(&input, &mut rng);
    }
}

#[test]
fn bind_sets_the_mode_and_replaces_only_stale_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new").join("api.sock");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();

    let listener = bind(&path, 0o666).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);
    let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(parent.permissions().mode() & 0o777, 0o755);
    drop(listener);

    // The stale socket of a previous run is replaced, with the new mode.
    let _listener = bind(&path, 0o600).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());

    // Anything else is left alone.
    let file = dir.path().join("precious");
    std::fs::write(&file, b"keep").unwrap();
    assert!(matches!(
        bind(&file, 0o660),
        Err(UdsError::NotASocket { .. })
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}
