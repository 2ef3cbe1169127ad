//! Unit tests of `capctl dlq`: arguments, kinds, subjects, ids, layout.

use chrono::TimeZone;
use clap::Parser;
use timeline::domain::{PostId, UserId};
use timeline::messages::PostPayload;
use uuid::Uuid;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    dlq: DlqAction,
}

fn letter(original_subject: Option<&str>) -> DeadLetter {
    DeadLetter {
        sequence: 7,
        kind: "post".into(),
        original_subject: original_subject.map(str::to_owned),
        reason: Some("poison message: unknown version 9".into()),
        dead_at: Utc.timestamp_millis_opt(1_700_000_000_123).single(),
        message_id: None,
        post_id: None,
        bytes: 12,
    }
}

#[test]
fn kinds_are_those_of_the_fan_out_messages() {
    let user = UserId::parse("ann").expect("valid");
    let post = PostPayload {
        id: PostId::generate(),
        author_id: user.clone(),
        content: "hello".into(),
        created_at: Utc::now(),
    };
    let messages = [
        FanoutMessage::Post { post: post.clone() },
        FanoutMessage::Chunk {
            post,
            index: 0,
            followers: vec![user.clone()],
        },
        FanoutMessage::Follow {
            follower: user.clone(),
            followee: user.clone(),
            event_id: Uuid::now_v7(),
        },
        FanoutMessage::Unfollow {
            follower: user.clone(),
            followee: user,
            event_id: Uuid::now_v7(),
            since: None,
        },
    ];
    let kinds: Vec<&str> = messages.iter().map(FanoutMessage::kind).collect();
    assert_eq!(kinds, KINDS);
}

#[test]
fn selection_reads_the_services_stream_flags() {
    let cli = Cli::parse_from([
        "dlq",
        "replay",
        "--kind",
        "chunk",
        "--limit",
        "3",
        "--nats-stream",
        "TL",
    ]);
    let DlqAction::Replay(selection) = cli.dlq else {
        panic!("parsed as {:?}", cli.dlq);
    };
    assert_eq!(selection.kind.as_deref(), Some("chunk"));
    assert_eq!(selection.limit, Some(3));
    assert_eq!(selection.stream.dead_letter_stream(), "TL_DEAD");

    let cli = Cli::parse_from(["dlq", "list"]);
    let DlqAction::List(selection) = cli.dlq else {
        panic!("parsed as {:?}", cli.dlq);
    };
    assert_eq!((selection.kind, selection.limit), (None, None));

    assert!(Cli::try_parse_from(["dlq", "list", "--kind", "posts"]).is_err());
    assert!(Cli::try_parse_from(["dlq", "list", "--limit", "0"]).is_err());
}

#[test]
fn replay_goes_to_the_recorded_work_subject_of_this_deployment_only() {
    let subjects = Subjects::new("tl");
    assert_eq!(
        letter(Some("tl.fanout.chunk")).work_subject(&subjects),
        "tl.fanout.chunk"
    );
    // Missing, or not one of this deployment's work subjects: its kind's.
    assert_eq!(letter(None).work_subject(&subjects), "tl.fanout.post");
    assert_eq!(
        letter(Some("other.fanout.post")).work_subject(&subjects),
        "tl.fanout.post"
    );
    assert_eq!(
        letter(Some("tl.dead.post")).work_subject(&subjects),
        "tl.fanout.post"
    );
}

#[test]
fn replay_ids_differ_from_the_original_and_name_the_letter() {
    assert_eq!(letter(None).replay_id(), "replay.7.1700000000123");
}

#[test]
fn limits_stop_the_walk() {
    assert!(!reached(None, 1_000_000));
    assert!(!reached(Some(2), 1));
    assert!(reached(Some(2), 2));
}

#[test]
fn a_listing_shows_each_letter_and_a_total() {
    let list = DeadLetterList {
        stream: "TL_DEAD".into(),
        kind: Some("post".into()),
        total: 1,
        in_stream: 3,
        letters: vec![letter(Some("tl.fanout.post"))],
    };
    let text = list.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].trim_start().starts_with("SEQUENCE"), "{text}");
    for part in [
        "7",
        "post",
        "2023-11-14T22:13:20Z",
        "tl.fanout.post",
        "(undecodable, 12 bytes)",
        "poison message: unknown version 9",
    ] {
        assert!(lines[1].contains(part), "{part} in {}", lines[1]);
    }
    assert_eq!(
        lines[2],
        "total: 1 dead letter listed of kind post (3 in TL_DEAD)"
    );
}
