//! Opaque page cursors: base64url (no padding) of a small JSON document.
//!
//! Clients pass `next_cursor` back unchanged. A cursor names the list it
//! belongs to (kind and owner), so one from another list, or a tampered one,
//! is refused with `400` instead of reaching the driver.
//!
//! - graph lists and an author's posts keep the driver's paging state (and,
//!   for posts, the time bucket it belongs to);
//! - the home timeline keeps the bucket and id of the last post returned: the
//!   page merges several partitions (the user's own rows and the posts of the
//!   celebrities they follow), and only a post id is a position that means the
//!   same thing in all of them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Direction, Invalid, PostId, UserId};
use crate::store::Position;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum Cursor {
    Following {
        u: String,
        p: String,
    },
    Followers {
        u: String,
        p: String,
    },
    Posts {
        u: String,
        b: i64,
        p: Option<String>,
    },
    Timeline {
        u: String,
        b: i64,
        id: Uuid,
    },
}

fn encode(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

fn decode(raw: &str) -> Result<Cursor, Invalid> {
    let bad = || Invalid::new("cursor", "cursor is not one this service issued");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

fn wrong_list() -> Invalid {
    Invalid::new("cursor", "cursor belongs to another list")
}

fn paging_bytes(raw: &str) -> Result<Vec<u8>, Invalid> {
    URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| Invalid::new("cursor", "cursor is not one this service issued"))
}

/// The cursor of a graph list after `paging_state`.
pub fn graph(user: &UserId, direction: Direction, paging_state: &[u8]) -> String {
    let u = user.as_str().to_owned();
    let p = URL_SAFE_NO_PAD.encode(paging_state);
    encode(&match direction {
        Direction::Followers => Cursor::Followers { u, p },
        Direction::Following => Cursor::Following { u, p },
    })
}

/// The paging state a graph cursor carries.
pub fn parse_graph(raw: &str, user: &UserId, direction: Direction) -> Result<Vec<u8>, Invalid> {
    match (decode(raw)?, direction) {
        (Cursor::Followers { u, p }, Direction::Followers)
        | (Cursor::Following { u, p }, Direction::Following)
            if u == user.as_str() =>
        {
            paging_bytes(&p)
        }
        _ => Err(wrong_list()),
    }
}

/// The cursor of an author's posts: a bucket and the paging state inside it.
pub fn posts(author: &UserId, bucket: i64, paging_state: Option<&[u8]>) -> String {
    encode(&Cursor::Posts {
        u: author.as_str().to_owned(),
        b: bucket,
        p: paging_state.map(|p| URL_SAFE_NO_PAD.encode(p)),
    })
}

pub fn parse_posts(raw: &str, author: &UserId) -> Result<(i64, Option<Vec<u8>>), Invalid> {
    match decode(raw)? {
        Cursor::Posts { u, b, p } if u == author.as_str() => {
            Ok((b, p.as_deref().map(paging_bytes).transpose()?))
        }
        _ => Err(wrong_list()),
    }
}

/// The cursor of a home timeline: strictly below this post, in this bucket.
pub fn timeline(user: &UserId, bucket: i64, last: PostId) -> String {
    encode(&Cursor::Timeline {
        u: user.as_str().to_owned(),
        b: bucket,
        id: last.uuid(),
    })
}

pub fn parse_timeline(raw: &str, user: &UserId) -> Result<Position, Invalid> {
    match decode(raw)? {
        Cursor::Timeline { u, b, id } if u == user.as_str() => {
            let post_id = PostId::from_uuid(id).ok_or_else(wrong_list)?;
            Ok(Position::Before { bucket: b, post_id })
        }
        _ => Err(wrong_list()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).expect("valid")
    }

    #[test]
    fn round_trips_and_is_bound_to_its_list() {
        let ann = user("ann");
        let raw = graph(&ann, Direction::Followers, b"\x01\x02state");
        assert_eq!(
            parse_graph(&raw, &ann, Direction::Followers),
            Ok(b"\x01\x02state".to_vec())
        );
        assert!(parse_graph(&raw, &ann, Direction::Following).is_err());
        assert!(parse_graph(&raw, &user("bob"), Direction::Followers).is_err());

        let id = PostId::generate();
        let raw = timeline(&ann, 7, id);
        assert_eq!(
            parse_timeline(&raw, &ann),
            Ok(Position::Before {
                bucket: 7,
                post_id: id
            })
        );
        assert!(parse_posts(&raw, &ann).is_err());
    }

    #[test]
    fn garbage_is_refused() {
        let ann = user("ann");
        assert!(parse_timeline("not base64 !!", &ann).is_err());
        assert!(parse_timeline(&URL_SAFE_NO_PAD.encode("{}"), &ann).is_err());
    }
}
