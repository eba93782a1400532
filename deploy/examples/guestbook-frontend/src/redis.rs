//! The few Redis commands the guestbook needs, spoken in RESP over one TCP connection per request
//! (the tutorial's PHP frontend did the same through Predis).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(3);

/// A Redis reply, as far as the guestbook reads them.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Status(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// Encodes one command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Sends one command to `addr` (host:port) and reads its reply; a Redis error reply is an error.
pub async fn command(addr: &str, args: &[&[u8]]) -> io::Result<Reply> {
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(&encode(args)).await?;
        let mut reader = BufReader::new(stream);
        read_reply(&mut reader).await
    })
    .await
    .map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("redis at {addr} did not answer in {TIMEOUT:?}"),
        )
    })?
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

async fn read_line<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "redis closed the connection",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads one reply (recursively for arrays).
pub async fn read_reply<R: AsyncBufReadExt + Unpin + Send>(reader: &mut R) -> io::Result<Reply> {
    let line = read_line(reader).await?;
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| bad("empty reply line"))?;
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| bad(format!("bad length in reply: {line}")))
    };
    match kind {
        "+" => Ok(Reply::Status(rest.to_string())),
        "-" => Err(io::Error::other(format!("redis: {rest}"))),
        ":" => Ok(Reply::Integer(number()?)),
        "$" => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut data = vec![0; len as usize + 2];
            reader.read_exact(&mut data).await?;
            data.truncate(len as usize);
            Ok(Reply::Bulk(Some(data)))
        }
        "*" => {
            let len = number()?;
            let mut items = Vec::with_capacity(len.max(0) as usize);
            for _ in 0..len {
                items.push(Box::pin(read_reply(reader)).await?);
            }
            Ok(Reply::Array(items))
        }
        _ => Err(bad(format!("unknown reply: {line}"))),
    }
}

/// The strings of an array of bulk replies (LRANGE's answer).
pub fn strings(reply: Reply) -> io::Result<Vec<String>> {
    match reply {
        Reply::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Reply::Bulk(Some(data)) => Ok(String::from_utf8_lossy(&data).into_owned()),
                other => Err(bad(format!("expected a string, got {other:?}"))),
            })
            .collect(),
        other => Err(bad(format!("expected an array, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_bulk_strings() {
        assert_eq!(
            encode(&[b"RPUSH", b"k", b"a b"]),
            b"*3\r\n$5\r\nRPUSH\r\n$1\r\nk\r\n$3\r\na b\r\n"
        );
    }

    #[tokio::test]
    async fn reads_nested_replies() {
        let mut input: &[u8] = b"*3\r\n$2\r\nhi\r\n$-1\r\n:7\r\n";
        let reply = read_reply(&mut input).await.unwrap();
        assert_eq!(
            reply,
            Reply::Array(vec![
                Reply::Bulk(Some(b"hi".to_vec())),
                Reply::Bulk(None),
                Reply::Integer(7)
            ])
        );
        let mut err: &[u8] = b"-READONLY You can't write against a read only replica.\r\n";
        assert!(
            read_reply(&mut err)
                .await
                .unwrap_err()
                .to_string()
                .contains("READONLY")
        );
    }
}
