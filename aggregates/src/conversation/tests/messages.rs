//! Given/when/then: one message's changes, reactions and read markers, decided on the
//! message's write-side facts.

use super::*;
use crate::conversation::STREAM;
use crate::values::Emoji;

fn fact(author: Uuid) -> Option<MessageFact> {
    Some(MessageFact { message_id: M, author_id: author, deleted: false, version: 1 })
}

fn deleted_fact(author: Uuid) -> Option<MessageFact> {
    Some(MessageFact { message_id: M, author_id: author, deleted: true, version: 2 })
}

fn body(s: &str) -> MessageBody {
    MessageBody::parse(s).unwrap()
}

fn thumbs() -> Emoji {
    Emoji::parse("👍").unwrap()
}

#[test]
fn mentions_keep_only_other_members() {
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::PostMessage {
            message_id: M,
            author_id: ALICE,
            body: body("@bob"),
            mentions: vec![BOB, EVE, ALICE],
        })
        .then_expect_events(vec![ConversationEvent::MessagePosted {
            message_id: M,
            conversation_id: C,
            author_id: ALICE,
            body: "@bob".into(),
            mentions: vec![BOB],
        }]);
}

#[test]
fn only_the_author_edits_a_live_message_at_the_version_they_saw() {
    let edit = |actor, message, expected_version| ConversationCommand::EditMessage {
        actor_id: actor,
        message,
        body: body("better"),
        expected_version,
    };
    Given::with(()).given(with_bob()).when(edit(BOB, fact(BOB), Some(1))).then_expect_events(vec![
        ConversationEvent::MessageEdited {
            message_id: M,
            conversation_id: C,
            author_id: BOB,
            body: "better".into(),
            version: 2,
        },
    ]);
    Given::with(())
        .given(with_bob())
        .when(edit(ALICE, fact(BOB), None))
        .then_expect_error(ConversationError::NotTheAuthor);
    Given::with(())
        .given(with_bob())
        .when(edit(BOB, fact(BOB), Some(3)))
        .then_expect_error(ConversationError::StaleMessage { current: 1 });
    Given::with(())
        .given(with_bob())
        .when(edit(BOB, deleted_fact(BOB), None))
        .then_expect_error(ConversationError::MessageDeleted);
    Given::with(())
        .given(with_bob())
        .when(edit(BOB, None, None))
        .then_expect_error(ConversationError::MessageNotFound);
}

#[test]
fn the_author_an_admin_or_a_moderator_deletes_once() {
    let delete = |actor, message, moderator| ConversationCommand::DeleteMessage {
        actor_id: actor,
        message,
        moderator,
    };
    let deleted = |by| ConversationEvent::MessageDeleted {
        message_id: M,
        conversation_id: C,
        author_id: BOB,
        deleted_by: by,
        version: 2,
    };
    Given::with(())
        .given(with_bob())
        .when(delete(BOB, fact(BOB), false))
        .then_expect_events(vec![deleted(BOB)]);
    Given::with(())
        .given(with_bob())
        .when(delete(ALICE, fact(BOB), false))
        .then_expect_events(vec![deleted(ALICE)]);
    Given::with(())
        .given(with_bob())
        .when(delete(EVE, fact(BOB), true))
        .then_expect_events(vec![deleted(EVE)]);
    Given::with(())
        .given(with_bob())
        .when(delete(BOB, fact(ALICE), false))
        .then_expect_error(ConversationError::NotTheAuthor);
    Given::with(()).given(with_bob()).when(delete(BOB, deleted_fact(BOB), false)).then_expect_events(vec![]);
}

#[test]
fn a_reaction_is_added_once_per_user_and_emoji_and_never_to_a_deleted_message() {
    let react = |message, existing| ConversationCommand::AddReaction {
        reaction_id: R,
        actor_id: ALICE,
        message,
        emoji: thumbs(),
        existing,
    };
    Given::with(()).given(with_bob()).when(react(fact(BOB), None)).then_expect_events(vec![
        ConversationEvent::ReactionAdded {
            reaction_id: R,
            message_id: M,
            conversation_id: C,
            user_id: ALICE,
            emoji: "👍".into(),
        },
    ]);
    Given::with(()).given(with_bob()).when(react(fact(BOB), Some(R))).then_expect_events(vec![]);
    Given::with(())
        .given(with_bob())
        .when(react(deleted_fact(BOB), None))
        .then_expect_error(ConversationError::MessageDeleted);
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::AddReaction {
            reaction_id: R,
            actor_id: EVE,
            message: fact(BOB),
            emoji: thumbs(),
            existing: None,
        })
        .then_expect_error(ConversationError::NotAMember);
}

#[test]
fn only_its_author_takes_a_reaction_back() {
    let reaction = Some(ReactionFact { reaction_id: R, message_id: M, user_id: ALICE, emoji: "👍".into() });
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::RemoveReaction { actor_id: ALICE, reaction: reaction.clone() })
        .then_expect_events(vec![ConversationEvent::ReactionRemoved {
            reaction_id: R,
            message_id: M,
            conversation_id: C,
            user_id: ALICE,
            emoji: "👍".into(),
        }]);
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::RemoveReaction { actor_id: BOB, reaction })
        .then_expect_error(ConversationError::NotTheAuthor);
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::RemoveReaction { actor_id: BOB, reaction: None })
        .then_expect_error(ConversationError::ReactionNotFound);
}

#[test]
fn reading_up_to_the_same_message_again_writes_nothing() {
    let read = ConversationEvent::MessagesRead { conversation_id: C, user_id: BOB, message_id: M };
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::MarkRead { user_id: BOB, message: fact(ALICE) })
        .then_expect_events(vec![read.clone()]);
    let mut events = with_bob();
    events.push(read);
    Given::with(())
        .given(events)
        .when(ConversationCommand::MarkRead { user_id: BOB, message: fact(ALICE) })
        .then_expect_events(vec![]);
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::MarkRead { user_id: EVE, message: fact(ALICE) })
        .then_expect_error(ConversationError::NotAMember);
}

#[test]
fn in_a_stream_chat_a_reader_posts_without_being_a_member_and_nowhere_else() {
    let post = || ConversationCommand::PostAsReader { message_id: M, author_id: EVE, body: body("hi") };
    Given::with(()).given(started()).when(post()).then_expect_error(ConversationError::NotAMember);
    let chat = vec![
        ConversationEvent::ConversationStarted {
            conversation_id: C,
            kind: STREAM.into(),
            title: Some("Chat: Launch".into()),
            topic: None,
            created_by: ALICE,
        },
        ConversationEvent::MemberAdded {
            conversation_id: C,
            user_id: ALICE,
            role: MemberRole::Admin,
            added_by: ALICE,
        },
    ];
    Given::with(()).given(chat).when(post()).then_expect_events(vec![ConversationEvent::MessagePosted {
        message_id: M,
        conversation_id: C,
        author_id: EVE,
        body: "hi".into(),
        mentions: vec![],
    }]);
}

#[test]
fn a_stream_chat_is_opened_with_its_host_as_admin() {
    let title = crate::values::Name::parse("Chat: Launch").unwrap();
    Given::with(())
        .given_no_previous_events()
        .when(ConversationCommand::StartStreamChat {
            conversation_id: C,
            account_id: C,
            title,
            host_id: ALICE,
        })
        .then_expect_events(vec![
            ConversationEvent::ConversationStarted {
                conversation_id: C,
                kind: STREAM.into(),
                title: Some("Chat: Launch".into()),
                topic: None,
                created_by: ALICE,
            },
            ConversationEvent::MemberAdded {
                conversation_id: C,
                user_id: ALICE,
                role: MemberRole::Admin,
                added_by: ALICE,
            },
        ]);
}
