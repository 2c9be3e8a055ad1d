//! SMTP through lettre, the only module that uses it: building messages (with the thread
//! headers), the transport for `starttls` / `tls` / `none` with AUTH and certificate checks,
//! delivery bounded by `timeout`, and errors an operator can act on. The password is read at
//! each connection (so a fixed `password_file` needs no restart) and is never part of a message.

use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls as LettreTls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::outbox::Stored;
use crate::config::{EmailSettings, PASSWORD_ENV, Tls};

/// Whether a failed delivery says something about the server (try later, stop this round) or
/// only about this one message (try the next one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Server,
    Message,
}

/// A failed delivery, described for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendError {
    pub scope: Scope,
    pub message: String,
}

impl SendError {
    fn server(message: String) -> SendError {
        SendError {
            scope: Scope::Server,
            message,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834), so vacation responders stay quiet.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

/// What goes into one email besides the configured sender and recipients.
pub struct Compose<'a> {
    pub message_id: &'a str,
    pub date: Timestamp,
    pub subject: &'a str,
    pub body: &'a str,
    pub in_reply_to: Option<&'a str>,
    pub references: &'a [String],
}

/// The configured SMTP route, with its addresses already parsed.
pub struct Mailer {
    settings: EmailSettings,
    from: Mailbox,
    to: Vec<Mailbox>,
    hello: String,
}

/// An address as the mailer reads it (`user@domain` or `Name <user@domain>`), for the config's
/// validation: an address the mailer would refuse fails at load, not at the first alert.
/// Returns the bare `user@domain`, by which duplicates are told; the error is lettre's reason.
pub fn parse_address(s: &str) -> Result<String, String> {
    s.parse::<Mailbox>()
        .map(|m| m.email.to_string())
        .map_err(|e| e.to_string().to_lowercase())
}

fn mailbox(field: &str, s: &str) -> Result<Mailbox, String> {
    s.parse::<Mailbox>()
        .map_err(|e| format!("email.{field} {s:?} is not a usable address: {e}"))
}

impl Mailer {
    pub fn new(settings: &EmailSettings) -> Result<Mailer, String> {
        let from = mailbox("from", &settings.from)?;
        let to = settings
            .to
            .iter()
            .map(|t| mailbox("to", t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Mailer {
            settings: settings.clone(),
            from,
            to,
            hello: crate::config::hostname(),
        })
    }

    fn target(&self) -> String {
        format!("{}:{}", self.settings.smtp_host, self.settings.smtp_port)
    }

    /// A fresh `Message-ID`, unique per process and time, under the sender's domain.
    pub fn new_message_id(&self, now: Timestamp) -> String {
        message_id(now, self.from.email.domain())
    }

    /// [`Mailer::new_message_id`] as a source the planner can own.
    pub fn id_source(&self) -> super::batch::Ids {
        let domain = self.from.email.domain().to_string();
        Box::new(move |now| message_id(now, &domain))
    }

    /// Builds the message and its outbox record.
    pub fn compose(&self, c: &Compose<'_>) -> Result<Stored, String> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(c.subject)
            .message_id(Some(c.message_id.to_string()))
            .date(SystemTime::try_from(c.date).unwrap_or(SystemTime::UNIX_EPOCH))
            .user_agent(format!("unitwarden/{}", env!("CARGO_PKG_VERSION")))
            .header(AutoSubmitted)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(to.clone());
        }
        if let Some(r) = c.in_reply_to {
            b = b.in_reply_to(r.to_string());
        }
        if !c.references.is_empty() {
            b = b.references(c.references.join(" "));
        }
        let msg = b
            .body(c.body.to_string())
            .map_err(|e| format!("cannot build the email: {e}"))?;
        Ok(Stored::new(
            c.message_id.to_string(),
            c.subject.to_string(),
            c.date,
            self.from.email.to_string(),
            self.to.iter().map(|m| m.email.to_string()).collect(),
            String::from_utf8_lossy(&msg.formatted()).into_owned(),
        ))
    }

    /// One delivery attempt of a stored message, bounded by `timeout` as a whole. On success,
    /// the server's reply (`250 ...`).
    pub async fn deliver(&self, m: &Stored) -> Result<String, SendError> {
        let envelope = envelope(m).map_err(|message| SendError {
            scope: Scope::Message,
            message,
        })?;
        let transport = self.transport()?;
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, transport.send_raw(&envelope, m.message.as_bytes()))
            .await
        {
            Err(_) => Err(SendError::server(format!(
                "timed out after {} talking to {}",
                humantime::format_duration(timeout),
                self.target()
            ))),
            Ok(Err(e)) => Err(self.describe(&e)),
            Ok(Ok(response)) => {
                let text: Vec<&str> = response.message().collect();
                Ok(format!("{} {}", response.code(), text.join(" "))
                    .trim_end()
                    .to_string())
            }
        }
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
        let s = &self.settings;
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.smtp_host)
            .port(s.smtp_port)
            .timeout(Some(s.timeout))
            .hello_name(ClientId::Domain(self.hello.clone()));
        b = match s.tls {
            Tls::None => b.tls(LettreTls::None),
            Tls::Starttls => b.tls(LettreTls::Required(self.tls_parameters()?)),
            Tls::Tls => b.tls(LettreTls::Wrapper(self.tls_parameters()?)),
        };
        if let Some(user) = &s.username {
            let password = password(s).map_err(SendError::server)?;
            b = b.credentials(Credentials::new(user.clone(), password));
        }
        Ok(b.build())
    }

    fn tls_parameters(&self) -> Result<TlsParameters, SendError> {
        let s = &self.settings;
        let mut p = TlsParameters::builder(s.smtp_host.clone())
            .dangerous_accept_invalid_certs(!s.tls_verify)
            .dangerous_accept_invalid_hostnames(!s.tls_verify);
        if let Some(file) = &s.ca_file {
            let pem = crate::config::read_text(file).map_err(|e| {
                SendError::server(format!("cannot read ca_file {}: {e}", file.display()))
            })?;
            let certs = split_pem(pem.as_bytes());
            if certs.is_empty() {
                return Err(SendError::server(format!(
                    "ca_file {} holds no PEM certificate",
                    file.display()
                )));
            }
            for cert in certs {
                let cert = Certificate::from_pem(&cert)
                    .map_err(|e| SendError::server(format!("ca_file {}: {e}", file.display())))?;
                p = p.add_root_certificate(cert);
            }
        }
        p.build()
            .map_err(|e| SendError::server(format!("cannot set up TLS: {e}")))
    }

    /// Turns lettre's error into one sentence that says what to fix.
    fn describe(&self, e: &lettre::transport::smtp::Error) -> SendError {
        let target = self.target();
        let cause = source_chain(e);
        if let Some(code) = e.status() {
            let code = code.to_string();
            let text = format!("{code} {cause}").trim_end().to_string();
            return match code.as_str() {
                "535" | "534" | "454" => {
                    SendError::server(format!("authentication failed at {target}: {text}"))
                }
                "530" | "538" => SendError::server(format!(
                    "the server at {target} requires authentication (and TLS) first: {text}"
                )),
                c if c.starts_with('4') => {
                    SendError::server(format!("the server at {target} refused for now: {text}"))
                }
                _ => SendError {
                    scope: Scope::Message,
                    message: format!("the server at {target} rejected the message: {text}"),
                },
            };
        }
        if e.is_timeout() {
            return SendError::server(format!("timed out talking to {target}"));
        }
        // Implicit TLS reports a failed handshake as a connection error: look at the cause.
        if e.is_tls() || cause.contains("invalid peer certificate") || cause.contains("handshake") {
            return SendError::server(format!(
                "TLS handshake with {target} failed: {}",
                tidy_tls(&cause)
            ));
        }
        if let Some(io) = io_kind(e) {
            match io {
                std::io::ErrorKind::ConnectionRefused => {
                    return SendError::server(format!(
                        "connection refused by {target} (is the SMTP server running?)"
                    ));
                }
                std::io::ErrorKind::TimedOut => {
                    return SendError::server(format!("timed out connecting to {target}"));
                }
                _ => {}
            }
        }
        SendError::server(format!("cannot deliver through {target}: {e}"))
    }
}

fn message_id(now: Timestamp, domain: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "<uw.{}.{}.{seq}@{domain}>",
        now.as_millisecond(),
        std::process::id()
    )
}

/// The SMTP password: `$UNITWARDEN_SMTP_PASSWORD`, else `password_file` (trailing newline
/// removed), else the inline `password`.
fn password(s: &EmailSettings) -> Result<String, String> {
    if let Some(p) = std::env::var_os(PASSWORD_ENV).filter(|p| !p.is_empty()) {
        return p
            .into_string()
            .map_err(|_| format!("${PASSWORD_ENV} is not valid UTF-8"));
    }
    if let Some(file) = &s.password_file {
        // Read at each connection, on the runtime's thread: a FIFO or /dev/zero at the path
        // must not hang or swamp it.
        let text = crate::config::read_text(file)
            .map_err(|e| format!("cannot read password_file {}: {e}", file.display()))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    s.password.clone().ok_or_else(|| {
        format!(
            "email.username is set but there is no password (set password_file or ${PASSWORD_ENV})"
        )
    })
}

fn envelope(m: &Stored) -> Result<lettre::address::Envelope, String> {
    let addr = |s: &str| {
        s.parse::<Address>()
            .map_err(|e| format!("{s:?} is not an address: {e}"))
    };
    let to =
        m.to.iter()
            .map(|t| addr(t))
            .collect::<Result<Vec<_>, _>>()?;
    lettre::address::Envelope::new(Some(addr(&m.from)?), to).map_err(|e| e.to_string())
}

/// The PEM blocks of a CA bundle, one certificate each.
fn split_pem(pem: &[u8]) -> Vec<Vec<u8>> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest: &str = &text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let stop = start + end + END.len();
        out.push(rest.as_bytes()[start..stop].to_vec());
        rest = &rest[stop..];
    }
    out
}

/// rustls's certificate verdicts, in words an operator can act on.
fn tidy_tls(s: &str) -> String {
    const MARK: &str = "invalid peer certificate: ";
    let Some(i) = s.find(MARK) else {
        return s.to_string();
    };
    let why = s[i + MARK.len()..].trim();
    let hint = "set ca_file to the CA that signed the server's certificate, or tls_verify = false";
    if why.contains("UnknownIssuer") {
        format!("certificate not trusted (unknown issuer): {hint}")
    } else if why.contains("CaUsedAsEndEntity") {
        format!(
            "the server presents a CA certificate as its own (a typical self-signed one): {hint}"
        )
    } else if why.contains("NotValidForName") {
        "certificate is not valid for smtp_host (name mismatch)".to_string()
    } else if why.contains("Expired") {
        "certificate has expired".to_string()
    } else {
        format!("invalid certificate: {why}")
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn io_kind(e: &dyn std::error::Error) -> Option<std::io::ErrorKind> {
    let mut cur = e.source();
    while let Some(s) = cur {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = s.source();
    }
    None
}

/// `unitwarden test-email`: sends one message now, bypassing batching and the outbox. `Ok` is
/// a report for stdout, `Err` one line for stderr.
pub async fn test_email(settings: &EmailSettings) -> Result<String, String> {
    let mailer = Mailer::new(settings)?;
    let host = crate::config::hostname();
    let now = Timestamp::now();
    let tz = jiff::tz::TimeZone::system();
    let id = mailer.new_message_id(now);
    let subject = format!("{} {host}: test email", settings.subject_prefix);
    let body = format!(
        "This is a test email from unitwarden on {host}.\n\
         Sent at {} through {}:{} ({}).\n\
         If you can read it, alerts from this host will reach {}.\n\n-- \nunitwarden {}\n",
        super::render::local_time(now, &tz),
        settings.smtp_host,
        settings.smtp_port,
        tls_name(settings.tls),
        settings.to.join(", "),
        env!("CARGO_PKG_VERSION"),
    );
    let stored = mailer.compose(&Compose {
        message_id: &id,
        date: now,
        subject: &subject,
        body: &body,
        in_reply_to: None,
        references: &[],
    })?;
    let started = std::time::Instant::now();
    let response = mailer.deliver(&stored).await.map_err(|e| e.message)?;
    Ok(format!(
        "sent to {} through {} ({}{}) in {}\nserver: {response}\nmessage-id: {id}",
        settings.to.join(", "),
        mailer.target(),
        tls_name(settings.tls),
        settings
            .username
            .as_ref()
            .map(|u| format!(", AUTH as {u}"))
            .unwrap_or_default(),
        humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64)),
    ))
}

fn tls_name(t: Tls) -> &'static str {
    match t {
        Tls::Starttls => "starttls",
        Tls::Tls => "tls",
        Tls::None => "no TLS",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::path::Path;

    fn settings(extra: &str) -> EmailSettings {
        let text = format!(
            "[email]\nto = [\"Ops <ops@example.com>\", \"b@example.org\"]\nfrom = \"unitwarden@web-1.example.com\"\n{extra}"
        );
        config::parse(Path::new("/t.toml"), &text)
            .unwrap()
            .email
            .unwrap()
    }

    #[test]
    fn messages_carry_the_thread_headers_and_stay_ascii() {
        let m = Mailer::new(&settings("")).unwrap();
        let id = m.new_message_id("2026-11-23T05:00:00Z".parse().unwrap());
        assert!(
            id.starts_with("<uw.") && id.ends_with("@web-1.example.com>"),
            "{id}"
        );
        let refs = vec!["<a@x>".to_string(), "<b@x>".to_string()];
        let s = m
            .compose(&Compose {
                message_id: &id,
                date: "2026-11-23T05:00:00Z".parse().unwrap(),
                subject: "[unitwarden] web-1: nginx.service is down",
                body: "nginx.service is down\nHost: web-1\n",
                in_reply_to: Some("<b@x>"),
                references: &refs,
            })
            .unwrap();
        for want in [
            format!("Message-ID: {id}"),
            "In-Reply-To: <b@x>".into(),
            "References: <a@x> <b@x>".into(),
            "Subject: [unitwarden] web-1: nginx.service is down".into(),
            "Auto-Submitted: auto-generated".into(),
            "Content-Type: text/plain; charset=utf-8".into(),
            "Date: Mon, 23 Nov 2026 05:00:00 +0000".into(),
        ] {
            assert!(
                s.message.contains(&want),
                "missing {want:?} in\n{}",
                s.message
            );
        }
        assert_eq!(s.from, "unitwarden@web-1.example.com");
        assert_eq!(s.to, ["ops@example.com", "b@example.org"]);
        assert!(envelope(&s).is_ok());
    }

    /// Nothing in a subject can add a header: lettre encodes a subject with control characters
    /// as one RFC 2047 encoded word. Addresses never carry any: the config refuses them.
    #[test]
    fn a_subject_cannot_add_a_header() {
        let m = Mailer::new(&settings("")).unwrap();
        for subject in [
            "[uw] web-1: x\r\nBcc: evil@example.net",
            "[uw] x\nBcc: evil@example.net\n\nbody",
            "[uw] x\0\u{1b}[2J\u{2028}\u{2029}",
            "[uw] =?utf-8?b?QmNjOiBldmls?= \"quoted\" \\",
        ] {
            let s = m
                .compose(&Compose {
                    message_id: "<a@x>",
                    date: "2026-11-23T05:00:00Z".parse().unwrap(),
                    subject,
                    body: "body\n",
                    in_reply_to: None,
                    references: &[],
                })
                .unwrap();
            let head = s.message.split("\r\n\r\n").next().unwrap();
            let mut names: Vec<&str> = head
                .split("\r\n")
                .filter(|l| !l.starts_with([' ', '\t']))
                .map(|l| l.split(':').next().unwrap())
                .collect();
            names.sort_unstable();
            assert_eq!(
                names,
                [
                    "Auto-Submitted",
                    "Content-Transfer-Encoding",
                    "Content-Type",
                    "Date",
                    "From",
                    "Message-ID",
                    "Subject",
                    "To",
                    "User-Agent",
                ],
                "{subject:?}:\n{head}"
            );
            assert!(!head.contains("Bcc"), "{head}");
            assert!(head.is_ascii(), "{head}");
        }
        for bad in [
            "Ops\r\nBcc: e@x <a@b>",
            "a@b\nBcc: e@x",
            "\"O\r\nBcc: e@x\" <a@b>",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_environment_wins_over_the_password_file_and_newlines_are_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let s = settings(&format!(
            "username = \"u\"\npassword_file = \"{}\"\n",
            f.display()
        ));
        // The variable is not set in unit tests (and must not be set: tests share a process).
        assert!(std::env::var_os(PASSWORD_ENV).is_none());
        assert_eq!(password(&s).unwrap(), "s3cret");
        let missing = settings("username = \"u\"\npassword_file = \"/nonexistent/pw\"\n");
        assert_eq!(
            password(&missing).unwrap_err(),
            "cannot read password_file /nonexistent/pw: no such file"
        );
        // Neither blocks nor fills memory: a FIFO without a writer, an endless device.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (path, why) in [
            (fifo.as_path(), "not a regular file"),
            (Path::new("/dev/zero"), "not a regular file"),
        ] {
            let s = settings(&format!(
                "username = \"u\"\npassword_file = \"{}\"\n",
                path.display()
            ));
            assert_eq!(
                password(&s).unwrap_err(),
                format!("cannot read password_file {}: {why}", path.display())
            );
        }
    }

    #[test]
    fn certificate_verdicts_say_what_to_fix() {
        let t = tidy_tls("Connection error: invalid peer certificate: UnknownIssuer");
        assert!(
            t.starts_with("certificate not trusted (unknown issuer): set ca_file"),
            "{t}"
        );
        let t = tidy_tls("invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))");
        assert!(t.contains("self-signed"), "{t}");
        assert_eq!(tidy_tls("handshake failed"), "handshake failed");
    }

    #[test]
    fn ca_bundles_are_split_into_certificates() {
        let one = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(split_pem(format!("junk\n{one}{one}").as_bytes()).len(), 2);
        assert!(split_pem(b"nothing").is_empty());
    }
}
