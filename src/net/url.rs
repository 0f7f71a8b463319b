//! `redis://[user[:password]@]host[:port][/db]` and `rediss://` (TLS) URLs: parsing, the
//! password rule, and redaction.
//!
//! One rule for every URL rdbferry takes (`--to`, a live source, a Cluster node): the user and
//! password come from the URL; a password not in the URL may come from the environment (the
//! caller names the variable: `RDBFERRY_TO_PASSWORD` for `--to`, `RDBFERRY_FROM_PASSWORD` for
//! a source). A user without a password still authenticates as that user ([`RedisUrl::auth`]).
//!
//! Passwords never leave a [`RedisUrl`]: `Debug` and every message use
//! [`RedisUrl::redacted`]; a string that did not parse is shown through [`redact`], which
//! hides any `user:password@` part, with or without a scheme, in any letter case. Schemes
//! match case-insensitively (`REDIS://` is a URL, not a file name).

use crate::error::{Error, Result};
use crate::net::{NetOptions, TlsConfig, TlsOptions};

/// Default port.
const DEFAULT_PORT: u16 = 6379;

/// Environment variable that supplies the target password when the URL has none.
pub const PASSWORD_ENV: &str = "RDBFERRY_TO_PASSWORD";

/// Environment variable that supplies the password of a live source when its URL has none.
pub const FROM_PASSWORD_ENV: &str = "RDBFERRY_FROM_PASSWORD";

/// Which end of a job a URL names: the target (`--to`) or a live source. It only decides the
/// words of messages (which password variable), never how the server is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// `--to URL`.
    #[default]
    Target,
    /// A live source (`--from URL`, or `verify redis://...`).
    Source,
}

impl Role {
    /// The environment variable that may hold this URL's password.
    pub fn password_env(self) -> &'static str {
        match self {
            Role::Target => PASSWORD_ENV,
            Role::Source => FROM_PASSWORD_ENV,
        }
    }
    /// How the user gave the URL, for messages.
    fn what(self) -> &'static str {
        match self {
            Role::Target => "--to URL",
            Role::Source => "source URL",
        }
    }
    /// The prefix of its TLS flags.
    fn tls_flags(self) -> &'static str {
        match self {
            Role::Target => "--tls-*",
            Role::Source => "--from-tls-*",
        }
    }
}

/// Whether `s` is a `redis://` or `rediss://` URL (any letter case) rather than a file name.
pub fn is_url(s: &str) -> bool {
    scheme(s).is_some()
}

/// The scheme of a URL (`redis` or `rediss`, lowercased) and what follows `://`.
fn scheme(s: &str) -> Option<(bool, &str)> {
    let (scheme, rest) = s.split_once("://")?;
    if scheme.eq_ignore_ascii_case("redis") {
        Some((false, rest))
    } else if scheme.eq_ignore_ascii_case("rediss") {
        Some((true, rest))
    } else {
        None
    }
}

/// A parsed `redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ACL user, if any.
    pub user: Option<String>,
    password: Option<String>,
    /// Database selected first.
    pub db: u64,
    /// Whether the URL named the db (`/N`): then the job writes there by default.
    pub explicit_db: bool,
    /// `rediss://`: connect with TLS.
    pub tls: bool,
    /// The TLS settings ([`RedisUrl::with_tls`]); the system's roots when not given.
    tls_config: Option<TlsConfig>,
    /// Target or source: the words of messages.
    pub role: Role,
    /// Deadlines of its connections.
    pub net: NetOptions,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `host[:port]` or `[v6]:port`.
fn host_port(hostport: &str) -> std::result::Result<(String, u16), &'static str> {
    if let Some(h) = hostport.strip_prefix('[') {
        let end = h.find(']').ok_or("unclosed '[' in host")?;
        let port = match h[end + 1..].strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "bad port")?,
            None => DEFAULT_PORT,
        };
        return Ok((h[..end].to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), p.parse().map_err(|_| "bad port")?)),
        None => Ok((hostport.to_string(), DEFAULT_PORT)),
    }
}

impl RedisUrl {
    /// Parse a target URL; `env_password` (from `RDBFERRY_TO_PASSWORD`) is used when the URL
    /// has no password. Errors never quote the password.
    pub fn parse(url: &str, env_password: Option<String>) -> Result<RedisUrl> {
        RedisUrl::parse_as(url, env_password, Role::Target)
    }

    /// Parse `url` naming the `role` end of a job; `env_password` (from
    /// [`Role::password_env`]) is used when the URL has no password.
    pub fn parse_as(url: &str, env_password: Option<String>, role: Role) -> Result<RedisUrl> {
        let bad = |why: &str| Error::Usage(format!("bad {} {}: {why}", role.what(), redact(url)));
        let Some((tls, rest)) = scheme(url) else {
            return Err(bad(
                "expected redis://[user[:password]@]host[:port][/db] (rediss:// for TLS)",
            ));
        };
        let (auth, hostpart) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hostport, path) = match hostpart.find('/') {
            Some(i) => (&hostpart[..i], &hostpart[i + 1..]),
            None => (hostpart, ""),
        };
        let db = if path.is_empty() {
            0
        } else {
            path.parse::<u64>()
                .map_err(|_| bad("the path must be a database number"))?
        };
        let (host, port) = host_port(hostport).map_err(bad)?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| percent_decode(u)),
                    Some(percent_decode(p)),
                ),
                None => ((!a.is_empty()).then(|| percent_decode(a)), None),
            },
        };
        let password = password.or(env_password.filter(|p| !p.is_empty()));
        Ok(RedisUrl {
            host,
            port,
            user,
            password,
            db,
            explicit_db: !path.is_empty(),
            tls,
            tls_config: None,
            role,
            net: NetOptions::default(),
        })
    }

    /// Apply the TLS options: builds the TLS configuration once, for every connection.
    /// Options given for a plain `redis://` URL are an error rather than silently unused.
    pub fn with_tls(mut self, options: &TlsOptions) -> Result<RedisUrl> {
        if !self.tls {
            if options.is_set() {
                return Err(Error::Usage(format!(
                    "{} options need a rediss:// URL, not {}",
                    self.role.tls_flags(),
                    self.redacted()
                )));
            }
            return Ok(self);
        }
        self.tls_config = Some(TlsConfig::new(options)?);
        Ok(self)
    }

    /// The same URL with the deadline of each connect, read and write (`--timeout`).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> RedisUrl {
        self.net.timeout = timeout;
        self
    }

    /// The TLS configuration to connect with: `None` for `redis://`; for `rediss://`, the one
    /// [`with_tls`](Self::with_tls) built, or the defaults (the system's roots).
    pub fn tls_config(&self) -> Result<Option<TlsConfig>> {
        match (&self.tls_config, self.tls) {
            (_, false) => Ok(None),
            (Some(c), true) => Ok(Some(c.clone())),
            (None, true) => TlsConfig::new(&TlsOptions {
                flags: match self.role {
                    Role::Target => "--tls",
                    Role::Source => "--from-tls",
                },
                ..TlsOptions::default()
            })
            .map(Some),
        }
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let auth = match (&self.user, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{auth}{}/{}", self.addr(), self.db)
    }

    /// Whether a password will be sent.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The arguments of `AUTH`, if any: `AUTH user password` when the URL names a user (with
    /// an empty password when none is given: a `nopass` user accepts any, and nobody runs
    /// silently as `default`), `AUTH password` for a password alone.
    pub(crate) fn auth(&self) -> Option<Vec<&[u8]>> {
        match (&self.user, &self.password) {
            (Some(u), pw) => Some(vec![
                &b"AUTH"[..],
                u.as_bytes(),
                pw.as_deref().unwrap_or("").as_bytes(),
            ]),
            (None, Some(pw)) => Some(vec![&b"AUTH"[..], pw.as_bytes()]),
            (None, None) => None,
        }
    }

    /// The same settings (user, password, TLS) for another node of a Cluster, with db 0 (a
    /// Cluster has no other).
    pub fn with_host_port(&self, host: &str, port: u16) -> RedisUrl {
        RedisUrl {
            host: host.to_string(),
            port,
            db: 0,
            explicit_db: false,
            ..self.clone()
        }
    }

    /// The db the URL names (`/N`), if it names one.
    pub fn url_db(&self) -> Option<u64> {
        self.explicit_db.then_some(self.db)
    }
}

/// Hide the password of anything that looks like a URL or a `user:password@host` for a
/// message about a string that did not parse: every `user:password@` part, with or without a
/// scheme, in any letter case. A string without `@` is returned as it is.
pub fn redact(s: &str) -> String {
    let (head, rest) = match s.find("://") {
        Some(i) => s.split_at(i + 3),
        None => ("", s),
    };
    let Some(at) = rest.rfind('@') else {
        return s.to_string();
    };
    let auth = &rest[..at];
    match auth.find(':') {
        Some(colon) => format!("{head}{}:***{}", &auth[..colon], &rest[at..]),
        // `pw@host`: a lone word before `@` may be a password; hide it too.
        None if !auth.is_empty() && !head.is_empty() => s.to_string(),
        None => format!("***{}", &rest[at..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = RedisUrl::parse("redis://alice:s3cr%40t@db.example:6380/2", None).unwrap();
        assert_eq!(u.host, "db.example");
        assert_eq!(u.port, 6380);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("s3cr@t"));
        assert_eq!(u.db, 2);
        assert_eq!(u.redacted(), "redis://alice:***@db.example:6380/2");
        assert!(!format!("{u:?}").contains("s3cr"));

        let u = RedisUrl::parse("redis://:pw@h", None).unwrap();
        assert_eq!((u.user.clone(), u.port, u.db), (None, 6379, 0));
        assert_eq!(u.password.as_deref(), Some("pw"));

        let u = RedisUrl::parse("redis://[::1]:7000", Some("env".into())).unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
        assert_eq!(u.password.as_deref(), Some("env"));

        let e = RedisUrl::parse("redis://u:hunter2@h:notaport", None).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(RedisUrl::parse("http://h", None).is_err());
        assert!(RedisUrl::parse("redis://h/x", None).is_err());
    }

    /// Issue 8, 8: schemes in any case are URLs; a password without a scheme, or in a URL
    /// that does not parse, is never printed.
    #[test]
    fn issue8_schemes_ignore_case_and_passwords_never_show() {
        for s in [
            "REDIS://:s3cret@h:1",
            "Redis://u:s3cret@h",
            "REDISS://u:s3cret@h",
        ] {
            assert!(is_url(s), "{s}");
            let u = RedisUrl::parse(s, None).unwrap();
            assert_eq!(u.password.as_deref(), Some("s3cret"));
            assert!(!u.redacted().contains("s3cret"));
        }
        assert!(!is_url("dump.rdb") && !is_url("file://x"));
        for s in [
            "bob:s3cret@127.0.0.1:6379",
            "REDIS://:s3cret@h:1/x",
            "redis://bob:s3cret@h:notaport",
            "HTTP://bob:s3cret@h",
            "bob:s3cret@h/extra@x",
        ] {
            let e = RedisUrl::parse(s, None).unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{s}: {e}");
            assert!(!redact(s).contains("s3cret"), "{s}: {}", redact(s));
        }
        assert_eq!(redact("s3cret@h"), "***@h");
        assert_eq!(redact("dump.rdb"), "dump.rdb");
    }

    #[test]
    fn parses_rediss_urls() {
        let u = RedisUrl::parse("rediss://u:pw-x@h:6390/1", None).unwrap();
        assert!(u.tls);
        assert_eq!(u.redacted(), "rediss://u:***@h:6390/1");
        assert!(!RedisUrl::parse("redis://h", None).unwrap().tls);
        // TLS options for a plain URL are refused, not ignored.
        let insecure = TlsOptions {
            insecure: true,
            ..Default::default()
        };
        let e = RedisUrl::parse("redis://:pw-x@h", None)
            .unwrap()
            .with_tls(&insecure)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rediss://") && !e.contains("pw-x"), "{e}");
        let u = RedisUrl::parse("rediss://h", None)
            .unwrap()
            .with_tls(&insecure)
            .unwrap();
        assert_eq!(u.tls_config().unwrap().unwrap().options(), &insecure);
    }

    #[test]
    fn auth_rule() {
        let a = |s: &str| {
            RedisUrl::parse(s, None).unwrap().auth().map(|v| {
                v.iter()
                    .map(|x| String::from_utf8_lossy(x).into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(a("redis://h"), None);
        assert_eq!(a("redis://alice@h").unwrap(), ["AUTH", "alice", ""]);
        assert_eq!(a("redis://alice:pw@h").unwrap(), ["AUTH", "alice", "pw"]);
        assert_eq!(a("redis://:pw@h").unwrap(), ["AUTH", "pw"]);
    }
}
