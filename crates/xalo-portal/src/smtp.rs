//! E-mail over SMTP (RFC 5321), and a small receiving server for the demo.
//!
//! Written by hand rather than with a mail crate: the portal only hands finished messages
//! to a relay on the operator's network (EHLO, MAIL, RCPT, DATA, QUIT), which is a few
//! dozen lines, while full mail libraries bring TLS stacks, DNS resolvers and builders the
//! crate does not need. A relay that requires STARTTLS or authentication is outside this
//! client; the operator runs a local relay (as most deployments do) that speaks onwards.
//!
//! [`MailSink`] is the other side: a real SMTP server that accepts every message and
//! stores it as an `.eml` file, so the demo and the tests see what a citizen would get.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use xalo_core::{Error, ErrorCode};

/// Where mail goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// The relay, `host:port`.
    pub relay: String,
    /// The sender address, e.g. `khong-tra-loi@dichvucong.gov.vn`.
    pub from: String,
    /// The name this client gives in EHLO (default `localhost`).
    #[serde(default)]
    pub helo: Option<String>,
}

/// A file attached to a message.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: String,
    pub mime_type: String,
    pub bytes: Vec<u8>,
}

/// One message to one recipient.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub attachment: Option<Attachment>,
}

fn smtp_error(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::ResultSmtp, m)
}

/// Check an address enough to put it in an envelope: `local@domain`, no spaces, no
/// angle brackets or line breaks that could inject SMTP commands or headers.
pub fn check_address(address: &str) -> Result<(), Error> {
    let bad = || {
        Error::new(
            ErrorCode::ResultBadAddress,
            format!("{address:?} is not an e-mail address"),
        )
    };
    let (local, domain) = address.rsplit_once('@').ok_or_else(bad)?;
    let allowed = |c: char| {
        c.is_ascii_graphic()
            && !matches!(
                c,
                '<' | '>' | '(' | ')' | ',' | ';' | ':' | '\\' | '"' | '[' | ']' | '@'
            )
    };
    if address.len() > 254
        || local.is_empty()
        || local.len() > 64
        || domain.len() < 3
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || !local.chars().all(allowed)
        || !domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(bad());
    }
    Ok(())
}

/// An RFC 2047 encoded word when the text is not plain ASCII.
fn header_text(text: &str) -> String {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        text.to_owned()
    } else {
        format!("=?UTF-8?B?{}?=", STANDARD.encode(text.as_bytes()))
    }
}

fn wrap_base64(bytes: &[u8]) -> String {
    let encoded = STANDARD.encode(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out
}

/// The message as RFC 5322 text with MIME parts (CRLF line ends).
pub fn format_message(from: &str, mail: &Mail) -> String {
    let boundary = format!("=_xalo_{}", hex::encode(rand::random::<[u8; 12]>()));
    let domain = from.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let mut m = String::new();
    m.push_str(&format!("From: {from}\r\n"));
    m.push_str(&format!("To: {}\r\n", mail.to));
    m.push_str(&format!("Subject: {}\r\n", header_text(&mail.subject)));
    m.push_str(&format!("Date: {}\r\n", chrono::Utc::now().to_rfc2822()));
    m.push_str(&format!(
        "Message-ID: <{}@{domain}>\r\n",
        hex::encode(rand::random::<[u8; 16]>())
    ));
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str(&format!("--{boundary}\r\n"));
    m.push_str(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    m.push_str(&wrap_base64(mail.text.as_bytes()));
    if let Some(a) = &mail.attachment {
        let name = header_text(&a.name);
        m.push_str(&format!("--{boundary}\r\n"));
        m.push_str(&format!(
            "Content-Type: {}; name=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n",
            a.mime_type
        ));
        m.push_str(&wrap_base64(&a.bytes));
    }
    m.push_str(&format!("--{boundary}--\r\n"));
    m
}

struct Conversation<R, W> {
    reader: BufReader<R>,
    writer: W,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conversation<R, W> {
    /// Read one (possibly multi-line) reply; its code must be `expect`.
    async fn reply(&mut self, expect: u16, after: &str) -> Result<(), Error> {
        loop {
            let mut line = String::new();
            let n = (&mut self.reader)
                .take(4096)
                .read_line(&mut line)
                .await
                .map_err(|e| smtp_error(format!("reading the reply to {after}: {e}")))?;
            if n == 0 {
                return Err(smtp_error(format!(
                    "the relay closed the connection after {after}"
                )));
            }
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| {
                smtp_error(format!("malformed reply to {after}: {}", line.trim_end()))
            })?;
            if line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            if code != expect {
                return Err(smtp_error(format!(
                    "the relay answered {after} with {}",
                    line.trim_end()
                )));
            }
            return Ok(());
        }
    }

    async fn command(&mut self, line: &str, expect: u16) -> Result<(), Error> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| smtp_error(format!("sending {line}: {e}")))?;
        let verb = line.split([' ', ':']).next().unwrap_or(line);
        self.reply(expect, verb).await
    }
}

/// Send `mail` through the relay.
pub async fn send(settings: &SmtpSettings, mail: &Mail) -> Result<(), Error> {
    check_address(&settings.from)?;
    check_address(&mail.to)?;
    let work = async {
        let stream = TcpStream::connect(&settings.relay)
            .await
            .map_err(|e| smtp_error(format!("connecting to {}: {e}", settings.relay)))?;
        let (r, w) = stream.into_split();
        let mut c = Conversation {
            reader: BufReader::new(r),
            writer: w,
        };
        c.reply(220, "the greeting").await?;
        c.command(
            &format!("EHLO {}", settings.helo.as_deref().unwrap_or("localhost")),
            250,
        )
        .await?;
        c.command(&format!("MAIL FROM:<{}>", settings.from), 250)
            .await?;
        c.command(&format!("RCPT TO:<{}>", mail.to), 250).await?;
        c.command("DATA", 354).await?;
        let text = format_message(&settings.from, mail);
        let mut data = String::with_capacity(text.len() + 16);
        for line in text.split_inclusive("\r\n") {
            // Dot-stuffing: a line starting with '.' gets another, so it cannot end DATA.
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
        }
        data.push_str(".\r\n");
        c.writer
            .write_all(data.as_bytes())
            .await
            .map_err(|e| smtp_error(format!("sending the message: {e}")))?;
        c.reply(250, "the message").await?;
        // The message is accepted; a relay that drops the line before QUIT changes nothing.
        let _ = c.command("QUIT", 221).await;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .map_err(|_| smtp_error(format!("{} did not answer in time", settings.relay)))?
}

/// The largest message the sink accepts.
pub const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;

/// A receiving SMTP server that stores every message in a directory.
pub struct MailSink {
    pub addr: std::net::SocketAddr,
    pub dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl MailSink {
    /// Serve on `listener`, storing messages under `dir` (created if needed).
    pub async fn start(listener: TcpListener, dir: &Path) -> Result<MailSink, Error> {
        std::fs::create_dir_all(dir)?;
        let addr = listener.local_addr()?;
        let store = dir.to_path_buf();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    if let Err(e) = session(stream, &store).await {
                        tracing::debug!(error = %e, "mail sink session ended");
                    }
                });
            }
        });
        tracing::info!(%addr, dir = %dir.display(), "mail sink listening");
        Ok(MailSink {
            addr,
            dir: dir.to_path_buf(),
            task,
        })
    }

    /// The messages stored so far, oldest first, as text.
    pub fn messages(&self) -> Result<Vec<String>, Error> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).map_err(Error::from))
            .collect()
    }

    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for MailSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(stream: TcpStream, dir: &Path) -> Result<(), Error> {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    w.write_all(b"220 localhost ESMTP Xalo mail sink\r\n")
        .await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    loop {
        let mut line = String::new();
        if (&mut reader).take(4096).read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let answer: &str = if upper.starts_with("EHLO") {
            "250-localhost\r\n250-8BITMIME\r\n250 SIZE 10485760"
        } else if upper.starts_with("HELO") || upper == "NOOP" {
            "250 OK"
        } else if upper == "RSET" {
            from = None;
            to.clear();
            "250 OK"
        } else if upper.starts_with("MAIL FROM:") {
            from = Some(command[10..].trim().to_owned());
            to.clear();
            "250 OK"
        } else if upper.starts_with("RCPT TO:") {
            if from.is_none() {
                "503 MAIL first"
            } else {
                to.push(command[8..].trim().to_owned());
                "250 OK"
            }
        } else if upper == "DATA" {
            if to.is_empty() {
                "503 RCPT first"
            } else {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut message = Vec::new();
                let mut too_large = false;
                loop {
                    let mut l = Vec::new();
                    if (&mut reader)
                        .take(1 << 16)
                        .read_until(b'\n', &mut l)
                        .await?
                        == 0
                    {
                        return Ok(());
                    }
                    if l == b".\r\n" || l == b".\n" {
                        break;
                    }
                    let l = if l.starts_with(b".") { &l[1..] } else { &l[..] };
                    if message.len() + l.len() > MAX_MESSAGE_BYTES {
                        too_large = true;
                    } else {
                        message.extend_from_slice(l);
                    }
                }
                if too_large {
                    "552 Message too large"
                } else {
                    let name = format!(
                        "{:015}-{}.eml",
                        chrono::Utc::now().timestamp_millis(),
                        hex::encode(rand::random::<[u8; 4]>())
                    );
                    let mut stored = format!(
                        "X-Envelope-From: {}\r\nX-Envelope-To: {}\r\n",
                        from.as_deref().unwrap_or(""),
                        to.join(", ")
                    )
                    .into_bytes();
                    stored.extend_from_slice(&message);
                    tokio::fs::write(dir.join(&name), stored).await?;
                    from = None;
                    to.clear();
                    "250 OK stored"
                }
            }
        } else if upper == "QUIT" {
            w.write_all(b"221 Bye\r\n").await?;
            return Ok(());
        } else {
            "502 Command not implemented"
        };
        w.write_all(format!("{answer}\r\n").as_bytes()).await?;
    }
}

/// The text part of a stored message, decoded (for tests and the demo's viewer).
pub fn text_of(message: &str) -> Option<String> {
    let start = message.find("Content-Type: text/plain")?;
    let body = &message[start..];
    let begin = body.find("\r\n\r\n")? + 4;
    let end = body[begin..].find("--").map_or(body.len(), |e| begin + e);
    let b64: String = body[begin..end].split_whitespace().collect();
    STANDARD
        .decode(b64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        check_address("an.nguyen@example.vn").unwrap();
        for bad in [
            "",
            "a",
            "a@b",
            "a b@x.vn",
            "a@x.vn>\r\nRCPT",
            "<a@x.vn>",
            "@x.vn",
            "a@.vn",
        ] {
            assert_eq!(
                check_address(bad).unwrap_err().code,
                ErrorCode::ResultBadAddress,
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_message_travels_through_real_smtp() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = MailSink::start(listener, dir.path()).await.unwrap();
        let settings = SmtpSettings {
            relay: sink.addr.to_string(),
            from: "khong-tra-loi@dichvucong.example.vn".into(),
            helo: None,
        };
        let text = "Kết quả hồ sơ đã có.\n.\nDòng bắt đầu bằng dấu chấm.".to_owned();
        send(
            &settings,
            &Mail {
                to: "an@example.vn".into(),
                subject: "Kết quả hồ sơ G01-261128-0001".into(),
                text: text.clone(),
                attachment: Some(Attachment {
                    name: "ket-qua.asice".into(),
                    mime_type: "application/vnd.etsi.asic-e+zip".into(),
                    bytes: vec![0, 1, 2, 3],
                }),
            },
        )
        .await
        .unwrap();
        let messages = sink.messages().unwrap();
        assert_eq!(messages.len(), 1);
        let m = &messages[0];
        assert!(m.contains("X-Envelope-To: <an@example.vn>"), "{m}");
        assert!(m.contains("Subject: =?UTF-8?B?"), "{m}");
        assert!(m.contains("filename=\"ket-qua.asice\""), "{m}");
        assert_eq!(text_of(m).as_deref(), Some(text.as_str()));
        let refused = send(
            &SmtpSettings {
                relay: "127.0.0.1:1".into(),
                ..settings
            },
            &Mail {
                to: "an@example.vn".into(),
                subject: "x".into(),
                text: "x".into(),
                attachment: None,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code, ErrorCode::ResultSmtp);
    }
}
