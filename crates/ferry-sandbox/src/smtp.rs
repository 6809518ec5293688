//! An SMTP sink: a small real SMTP server (EHLO, AUTH PLAIN/LOGIN, MAIL,
//! RCPT, DATA, RSET, NOOP, QUIT) that keeps every message it accepts, for
//! the demo and for local development. Addresses at `bounce.example` are
//! refused with 550; the `smtp` fault knob answers MAIL with its status.

use std::net::SocketAddr;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::Sandbox;

pub const USERNAME: &str = "sandbox";
pub const PASSWORD: &str = "sandbox-smtp-password";
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// One accepted message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Email {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub subject: String,
    /// The message as received (headers and body), dot-unstuffed.
    pub data: String,
}

pub async fn serve(s: Sandbox, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                if let Err(e) = session(s, conn).await {
                    tracing::debug!(error = %e, "smtp session ended");
                }
            });
        }
    });
    Ok(bound)
}

fn address(arg: &str) -> String {
    let a = arg.split_once(':').map(|(_, a)| a).unwrap_or(arg).trim();
    let a = a.split_whitespace().next().unwrap_or("");
    a.trim_start_matches('<').trim_end_matches('>').to_string()
}

fn decode(b64: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

async fn session(s: Sandbox, conn: TcpStream) -> std::io::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"220 sandbox.local ESMTP Ferry sandbox\r\n")
        .await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end();
        let (verb, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
        let reply: String = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => "250-sandbox.local\r\n250-8BITMIME\r\n250-SIZE 10485760\r\n250-AUTH PLAIN LOGIN\r\n250 SMTPUTF8".into(),
            "HELO" => "250 sandbox.local".into(),
            "AUTH" => {
                let mut parts = arg.split_whitespace();
                let (user, pass) = match (parts.next().map(str::to_ascii_uppercase).as_deref(), parts.next()) {
                    (Some("PLAIN"), Some(b)) => {
                        let d = decode(b);
                        let mut f = d.split('\0').skip(1);
                        (f.next().unwrap_or("").to_string(), f.next().unwrap_or("").to_string())
                    }
                    (Some("LOGIN"), first) => {
                        let user = match first {
                            Some(u) => decode(u),
                            None => {
                                write.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                                line.clear();
                                lines.read_line(&mut line).await?;
                                decode(&line)
                            }
                        };
                        write.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                        line.clear();
                        lines.read_line(&mut line).await?;
                        (user, decode(&line))
                    }
                    _ => (String::new(), String::new()),
                };
                if user == USERNAME && pass == PASSWORD {
                    "235 2.7.0 Authentication successful".into()
                } else {
                    "535 5.7.8 Authentication credentials invalid".into()
                }
            }
            "MAIL" => {
                let fault = {
                    let mut w = s.world();
                    *w.requests.entry("smtp".into()).or_default() += 1;
                    w.faults.decide_status("smtp").1
                };
                match fault {
                    Some((status, _)) => format!("{status} injected fault"),
                    None => {
                        from = Some(address(arg));
                        to.clear();
                        "250 2.1.0 OK".into()
                    }
                }
            }
            "RCPT" => {
                let a = address(arg);
                if from.is_none() {
                    "503 5.5.1 MAIL first".into()
                } else if a.ends_with("@bounce.example") {
                    format!("550 5.1.1 <{a}>: mailbox unavailable")
                } else {
                    to.push(a);
                    "250 2.1.5 OK".into()
                }
            }
            "DATA" => {
                if from.is_none() || to.is_empty() {
                    "503 5.5.1 RCPT first".into()
                } else {
                    write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await? == 0 {
                            return Ok(());
                        }
                        if line == ".\r\n" || line == ".\n" {
                            break;
                        }
                        let l = line.strip_prefix('.').unwrap_or(&line);
                        if data.len() + l.len() > MAX_MESSAGE {
                            continue;
                        }
                        data.push_str(l);
                    }
                    let subject = data
                        .lines()
                        .take_while(|l| !l.is_empty())
                        .find_map(|l| l.strip_prefix("Subject: "))
                        .unwrap_or("")
                        .to_string();
                    s.world().emails.push(Email {
                        mail_from: from.take().unwrap_or_default(),
                        rcpt_to: std::mem::take(&mut to),
                        subject,
                        data,
                    });
                    "250 2.0.0 OK queued".into()
                }
            }
            "RSET" => {
                from = None;
                to.clear();
                "250 2.0.0 OK".into()
            }
            "NOOP" => "250 2.0.0 OK".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Command not recognized".into(),
        };
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\r\n").await?;
    }
}
