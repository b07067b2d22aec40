//! The `Set-Cookie` lines of answers (`vtex_session`, `vtex_segment`). The segment's line is
//! made once per segment token and shared by every session with that token, through their
//! snapshots ([`Derived`]): a store has a handful of segments, so snapshots hold one `Arc` each
//! instead of a line of ~400 bytes, and a successor version keeps it while its segment token
//! is the same. The session token's line differs for every session, so it is made for each
//! answer, by joining the token and the attributes (written once) instead of formatting a
//! cookie: keeping it with the snapshot would cost ~700 bytes of memory per cached session.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::http::HeaderValue;
use cookie::{Cookie, SameSite};

use super::request::{SEGMENT_COOKIE, SESSION_COOKIE};
use crate::prehashed::{text_cache, TextCache};
use crate::snapshot::{Derived, Snapshot};

/// The attributes of the token cookies (the same for every answer of a process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CookieStyle {
    /// `Max-Age`, seconds.
    pub max_age: u64,
    /// Whether cookies carry `Secure`.
    pub secure: bool,
}

impl CookieStyle {
    /// The `Set-Cookie` line of cookie `name` with `value` in this style, with the attributes
    /// storefronts forward verbatim: `Path=/`, `Max-Age`, `HttpOnly`, `SameSite=Lax`, and
    /// `Secure` when configured.
    pub fn line(&self, name: &str, value: &str) -> HeaderValue {
        let max_age = i64::try_from(self.max_age).unwrap_or(i64::MAX);
        let cookie = Cookie::build((name, value))
            .path("/")
            .max_age(cookie::time::Duration::seconds(max_age))
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .build();
        HeaderValue::try_from(cookie.to_string()).expect("token cookies are visible ASCII")
    }
}

/// A segment token's `Set-Cookie` line.
#[derive(Debug)]
struct SegmentLine {
    cookie: HeaderValue,
}

/// Most segments whose lines are shared: requests that make up many distinct segments cannot
/// grow the memory without bound.
const MAX_SHARED_SEGMENTS: usize = 4096;

/// The token cookie lines of a server: their style, and whether segment lines are kept with
/// snapshots and shared between sessions of the same segment (the fast paths) or made for each
/// answer.
pub struct CookieLines {
    style: CookieStyle,
    keep: bool,
    /// What follows the token in a `vtex_session` line (`; HttpOnly; …`), as `style` writes it.
    session_attributes: Box<str>,
    /// The lines of the segment tokens seen lately.
    segments: TextCache<Box<str>, Arc<SegmentLine>>,
}

impl CookieLines {
    /// Lines in `style`, kept and shared when `keep`.
    pub fn new(style: CookieStyle, keep: bool) -> Self {
        let sample = style.line(SESSION_COOKIE, "t");
        let sample = sample.to_str().expect("token cookies are visible ASCII");
        CookieLines {
            style,
            keep,
            session_attributes: sample[SESSION_COOKIE.len() + 2..].into(),
            segments: text_cache(MAX_SHARED_SEGMENTS),
        }
    }

    /// The style of every line.
    pub fn style(&self) -> CookieStyle {
        self.style
    }

    /// The shared line of segment token `token`, made if not known.
    fn shared_segment(&self, token: &str) -> Arc<SegmentLine> {
        if let Some(line) = self.segments.get(token) {
            return line;
        }
        let line = Arc::new(SegmentLine {
            cookie: self.style.line(SEGMENT_COOKIE, token),
        });
        self.segments.insert(token.into(), line.clone());
        line
    }

    /// The `Set-Cookie` line of session token `token`: the same line [`CookieStyle::line`]
    /// makes, without formatting a cookie.
    pub fn session(&self, token: &str) -> HeaderValue {
        let mut line = Vec::with_capacity(
            SESSION_COOKIE.len() + 1 + token.len() + self.session_attributes.len(),
        );
        line.extend_from_slice(SESSION_COOKIE.as_bytes());
        line.push(b'=');
        line.extend_from_slice(token.as_bytes());
        line.extend_from_slice(self.session_attributes.as_bytes());
        HeaderValue::from_maybe_shared(Bytes::from(line))
            .unwrap_or_else(|_| self.style.line(SESSION_COOKIE, token))
    }

    /// The `Set-Cookie` line of the segment token of `snapshot`'s session.
    pub fn segment(&self, snapshot: &Snapshot) -> HeaderValue {
        let token = snapshot.segment_token();
        if !self.keep {
            return self.style.line(SEGMENT_COOKIE, token);
        }
        let Some(lines) = snapshot.derived(Lines::default) else {
            return self.style.line(SEGMENT_COOKIE, token);
        };
        lines
            .segment
            .get_or_init(|| self.shared_segment(token))
            .cookie
            .clone()
    }
}

/// The lines kept with one snapshot.
#[derive(Default)]
struct Lines {
    segment: OnceLock<Arc<SegmentLine>>,
}

impl Derived for Lines {
    fn carried(&self, same_segment: bool) -> Option<Box<dyn Derived>> {
        let segment = self.segment.get().filter(|_| same_segment)?;
        let next = Lines::default();
        let _ = next.segment.set(segment.clone());
        Some(Box::new(next))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::{Key, Record, Session, SessionId, Value};

    const STYLE: CookieStyle = CookieStyle {
        max_age: 60,
        secure: false,
    };

    fn kept_lines() -> CookieLines {
        CookieLines::new(STYLE, true)
    }

    fn session(version: u64) -> Session {
        let mut s = Session::new("demo", 1_000, 10_000);
        s.version = version;
        s.set(&Key::new("public", "k"), Value::new("v"));
        s
    }

    fn kept(snapshot: &Snapshot) -> &Lines {
        snapshot.derived(Lines::default).unwrap()
    }

    #[test]
    fn successors_carry_the_lines_that_still_hold() {
        let lines = kept_lines();
        let first = Snapshot::new(session(1));
        let segment_line = lines.segment(&first);

        let other = Key::new("public", "other");
        let hint = first.segment_after([&other].into_iter());
        let mut same = first.session().unwrap().clone();
        same.version = 2;
        same.set(&other, Value::new("x"));
        let second = Snapshot::edited(Record::encode(&same, hint), &first);
        assert_eq!(kept(&second).segment.get().unwrap().cookie, segment_line);

        let utm = Key::new("public", "utm_source");
        let mut changed = second.session().unwrap().clone();
        changed.version = 3;
        changed.set(&utm, Value::new("google"));
        let third = Snapshot::edited(Record::encode(&changed, None), &second);
        assert!(
            third
                .derived(Lines::default)
                .unwrap()
                .segment
                .get()
                .is_none(),
            "made again when asked"
        );
        assert_ne!(third.segment_token(), first.segment_token());
        assert!(lines
            .segment(&third)
            .to_str()
            .unwrap()
            .starts_with(&format!("vtex_segment={};", third.segment_token())));

        let mut moved = third.session().unwrap().clone();
        moved.id = SessionId::random();
        let fourth = Snapshot::edited(Record::encode(&moved, None), &third);
        assert!(kept(&fourth).segment.get().is_some(), "the same segment");
    }

    #[test]
    fn equal_segments_share_their_lines_and_the_memory_is_bounded() {
        let lines = kept_lines();
        let a = Snapshot::new(session(1));
        let b = Snapshot::new(session(2));
        assert_eq!(lines.segment(&a), lines.segment(&b));
        assert!(Arc::ptr_eq(
            kept(&a).segment.get().unwrap(),
            kept(&b).segment.get().unwrap()
        ));
        let secure = CookieLines::new(
            CookieStyle {
                secure: true,
                ..STYLE
            },
            true,
        );
        let c = Snapshot::new(session(1));
        assert!(secure.segment(&c).to_str().unwrap().contains("; Secure"));
        assert!(!lines.segment(&a).to_str().unwrap().contains("; Secure"));
        // Made-up segments (one per request, say) do not grow the memory without bound.
        for i in 0..MAX_SHARED_SEGMENTS + 10 {
            let line = lines.shared_segment(&format!("made-up-{i}"));
            assert!(line
                .cookie
                .to_str()
                .unwrap()
                .starts_with("vtex_segment=made-up-"));
        }
        assert!(lines.segments.len() <= MAX_SHARED_SEGMENTS);
    }

    #[test]
    fn session_lines_are_the_lines_of_the_cookie_style() {
        for style in [
            STYLE,
            CookieStyle {
                max_age: 60,
                secure: true,
            },
        ] {
            let lines = CookieLines::new(style, true);
            for token in ["aaa", "aa", "eyJ0eXAiOiJKV1QifQ.eyJpZCI6IjEifQ.c2ln"] {
                assert_eq!(
                    lines.session(token),
                    style.line(SESSION_COOKIE, token),
                    "{token}"
                );
            }
        }
        let a = CookieLines::new(
            CookieStyle {
                max_age: 60,
                secure: true,
            },
            false,
        )
        .session("aaa");
        let mut attributes: Vec<&str> = a.to_str().unwrap().split("; ").collect();
        assert_eq!(attributes.remove(0), "vtex_session=aaa");
        attributes.sort_unstable();
        assert_eq!(
            attributes,
            ["HttpOnly", "Max-Age=60", "Path=/", "SameSite=Lax", "Secure"]
        );
    }

    #[test]
    fn segment_lines_are_made_anew_when_not_kept() {
        let fresh = Snapshot::new(session(1));
        let simple = CookieLines::new(STYLE, false);
        let other = Snapshot::new(session(1));
        assert_eq!(simple.segment(&fresh), kept_lines().segment(&other));
        assert!(
            fresh
                .derived(Lines::default)
                .unwrap()
                .segment
                .get()
                .is_none(),
            "nothing kept when not keeping"
        );
    }
}
