//! Given/when/then: the conversation's rules.

use cqrs_es::test::TestFramework;

use super::*;
use uuid::Uuid;

use crate::values::{Emoji, MessageBody, Name};

const C: Uuid = Uuid::from_u128(1);
const ALICE: Uuid = Uuid::from_u128(10);
const BOB: Uuid = Uuid::from_u128(11);
const EVE: Uuid = Uuid::from_u128(12);

fn started() -> Vec<ConversationEvent> {
    vec![
        ConversationEvent::ConversationStarted {
            conversation_id: C,
            kind: GROUP.into(),
            title: Some("Team".into()),
            topic: None,
            created_by: ALICE,
        },
        ConversationEvent::MemberAdded {
            conversation_id: C,
            user_id: ALICE,
            role: MemberRole::Admin,
            added_by: ALICE,
        },
    ]
}

fn with_bob() -> Vec<ConversationEvent> {
    let mut e = started();
    e.push(ConversationEvent::MemberAdded {
        conversation_id: C,
        user_id: BOB,
        role: MemberRole::Member,
        added_by: ALICE,
    });
    e
}

fn post(author: Uuid) -> ConversationCommand {
    ConversationCommand::PostMessage {
        message_id: Uuid::from_u128(99),
        author_id: author,
        body: MessageBody::parse("hi").unwrap(),
        mentions: vec![],
    }
}

#[test]
fn starting_a_group_makes_the_creator_admin_and_adds_members_once() {
    let mut expected = with_bob();
    expected.truncate(3);
    TestFramework::<Conversation>::with(())
        .given_no_previous_events()
        .when(ConversationCommand::StartGroup {
            conversation_id: C,
            account_id: Uuid::nil(),
            title: Name::parse("Team").unwrap(),
            creator_id: ALICE,
            member_ids: vec![BOB, BOB, ALICE],
        })
        .then_expect_events(expected);
}

#[test]
fn an_admin_adds_members_and_a_member_cannot() {
    TestFramework::<Conversation>::with(())
        .given(started())
        .when(ConversationCommand::AddMember { actor_id: ALICE, user_id: BOB, role: MemberRole::Member })
        .then_expect_events(vec![ConversationEvent::MemberAdded {
            conversation_id: C,
            user_id: BOB,
            role: MemberRole::Member,
            added_by: ALICE,
        }]);
    TestFramework::<Conversation>::with(())
        .given(with_bob())
        .when(ConversationCommand::AddMember { actor_id: BOB, user_id: EVE, role: MemberRole::Member })
        .then_expect_error(ConversationError::NotAnAdmin);
}

#[test]
fn a_non_member_sees_no_conversation_to_add_to() {
    TestFramework::<Conversation>::with(())
        .given(started())
        .when(ConversationCommand::AddMember { actor_id: EVE, user_id: EVE, role: MemberRole::Admin })
        .then_expect_error(ConversationError::NotFound);
}

#[test]
fn adding_an_existing_member_is_refused() {
    TestFramework::<Conversation>::with(())
        .given(with_bob())
        .when(ConversationCommand::AddMember { actor_id: ALICE, user_id: BOB, role: MemberRole::Member })
        .then_expect_error(ConversationError::AlreadyAMember);
}

#[test]
fn members_post_messages_and_outsiders_cannot() {
    TestFramework::<Conversation>::with(()).given(with_bob()).when(post(BOB)).then_expect_events(vec![
        ConversationEvent::MessagePosted {
            message_id: Uuid::from_u128(99),
            conversation_id: C,
            author_id: BOB,
            body: "hi".into(),
            mentions: vec![],
        },
    ]);
    TestFramework::<Conversation>::with(())
        .given(with_bob())
        .when(post(EVE))
        .then_expect_error(ConversationError::NotAMember);
}

#[test]
fn nothing_is_posted_to_a_conversation_that_does_not_exist() {
    TestFramework::<Conversation>::with(())
        .given_no_previous_events()
        .when(post(ALICE))
        .then_expect_error(ConversationError::NotFound);
}

#[test]
fn stored_names_are_stable() {
    let mut events = with_bob();
    events.push(ConversationEvent::MessagePosted {
        message_id: C,
        conversation_id: C,
        author_id: C,
        body: "b".into(),
        mentions: vec![C],
    });
    crate::payload::assert_stored_names(&events);
}

type Given = TestFramework<Conversation>;

const M: Uuid = Uuid::from_u128(99);
const R: Uuid = Uuid::from_u128(77);

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
fn a_direct_conversation_has_its_two_members_and_no_admin() {
    Given::with(())
        .given_no_previous_events()
        .when(ConversationCommand::StartDirect {
            conversation_id: C,
            account_id: Uuid::nil(),
            creator_id: ALICE,
            other_id: BOB,
        })
        .then_expect_events(vec![
            ConversationEvent::ConversationStarted {
                conversation_id: C,
                kind: DIRECT.into(),
                title: None,
                topic: None,
                created_by: ALICE,
            },
            ConversationEvent::MemberAdded {
                conversation_id: C,
                user_id: ALICE,
                role: MemberRole::Member,
                added_by: ALICE,
            },
            ConversationEvent::MemberAdded {
                conversation_id: C,
                user_id: BOB,
                role: MemberRole::Member,
                added_by: ALICE,
            },
        ]);
}

fn direct() -> Vec<ConversationEvent> {
    vec![
        ConversationEvent::ConversationStarted {
            conversation_id: C,
            kind: DIRECT.into(),
            title: None,
            topic: None,
            created_by: ALICE,
        },
        ConversationEvent::MemberAdded {
            conversation_id: C,
            user_id: ALICE,
            role: MemberRole::Member,
            added_by: ALICE,
        },
        ConversationEvent::MemberAdded {
            conversation_id: C,
            user_id: BOB,
            role: MemberRole::Member,
            added_by: ALICE,
        },
    ]
}

#[test]
fn a_direct_conversation_takes_no_members_no_title_and_nobody_leaves_it() {
    Given::with(())
        .given(direct())
        .when(ConversationCommand::AddMember { actor_id: ALICE, user_id: EVE, role: MemberRole::Member })
        .then_expect_error(ConversationError::NotAGroup);
    Given::with(())
        .given(direct())
        .when(ConversationCommand::Update {
            actor_id: ALICE,
            title: Some(Name::parse("x").unwrap()),
            topic: None,
        })
        .then_expect_error(ConversationError::NotAGroup);
    Given::with(())
        .given(direct())
        .when(ConversationCommand::RemoveMember { actor_id: BOB, user_id: BOB })
        .then_expect_error(ConversationError::NotAGroup);
}

#[test]
fn admins_change_title_and_topic_and_a_change_to_nothing_writes_nothing() {
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::Update { actor_id: ALICE, title: None, topic: Some(Some("Plans".into())) })
        .then_expect_events(vec![ConversationEvent::ConversationUpdated {
            conversation_id: C,
            title: Some("Team".into()),
            topic: Some("Plans".into()),
            updated_by: ALICE,
        }]);
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::Update {
            actor_id: ALICE,
            title: Some(Name::parse("Team").unwrap()),
            topic: None,
        })
        .then_expect_events(vec![]);
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::Update { actor_id: BOB, title: None, topic: Some(None) })
        .then_expect_error(ConversationError::NotAnAdmin);
}

#[test]
fn an_admin_or_a_moderator_archives_and_then_nothing_more_happens() {
    let archived = ConversationEvent::ConversationArchived { conversation_id: C, archived_by: ALICE };
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::Archive { actor_id: ALICE, moderator: false })
        .then_expect_events(vec![archived.clone()]);
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::Archive { actor_id: BOB, moderator: false })
        .then_expect_error(ConversationError::NotAnAdmin);
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::Archive { actor_id: EVE, moderator: true })
        .then_expect_events(vec![ConversationEvent::ConversationArchived {
            conversation_id: C,
            archived_by: EVE,
        }]);
    let mut gone = with_bob();
    gone.push(archived);
    Given::with(()).given(gone.clone()).when(post(BOB)).then_expect_error(ConversationError::Archived);
    Given::with(())
        .given(gone)
        .when(ConversationCommand::Archive { actor_id: ALICE, moderator: false })
        .then_expect_error(ConversationError::NotFound);
}

#[test]
fn a_member_leaves_an_admin_removes_and_a_member_cannot_remove_others() {
    let removed = |by| ConversationEvent::MemberRemoved { conversation_id: C, user_id: BOB, removed_by: by };
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::RemoveMember { actor_id: BOB, user_id: BOB })
        .then_expect_events(vec![removed(BOB)]);
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::RemoveMember { actor_id: ALICE, user_id: BOB })
        .then_expect_events(vec![removed(ALICE)]);
    Given::with(())
        .given(with_bob())
        .when(ConversationCommand::RemoveMember { actor_id: BOB, user_id: ALICE })
        .then_expect_error(ConversationError::NotAnAdmin);
    let mut left = with_bob();
    left.push(removed(BOB));
    Given::with(()).given(left.clone()).when(post(BOB)).then_expect_error(ConversationError::NotAMember);
    Given::with(())
        .given(left)
        .when(ConversationCommand::RemoveMember { actor_id: ALICE, user_id: BOB })
        .then_expect_error(ConversationError::NoSuchMember);
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
fn every_event_type_is_stored_under_its_name() {
    crate::payload::assert_stored_names(&[
        ConversationEvent::ConversationUpdated {
            conversation_id: C,
            title: None,
            topic: Some("t".into()),
            updated_by: C,
        },
        ConversationEvent::ConversationArchived { conversation_id: C, archived_by: C },
        ConversationEvent::MemberRemoved { conversation_id: C, user_id: C, removed_by: C },
        ConversationEvent::MessageEdited {
            message_id: M,
            conversation_id: C,
            author_id: C,
            body: "b".into(),
            version: 2,
        },
        ConversationEvent::MessageDeleted {
            message_id: M,
            conversation_id: C,
            author_id: C,
            deleted_by: C,
            version: 2,
        },
        ConversationEvent::ReactionAdded {
            reaction_id: R,
            message_id: M,
            conversation_id: C,
            user_id: C,
            emoji: "👍".into(),
        },
        ConversationEvent::ReactionRemoved {
            reaction_id: R,
            message_id: M,
            conversation_id: C,
            user_id: C,
            emoji: "👍".into(),
        },
        ConversationEvent::MessagesRead { conversation_id: C, user_id: C, message_id: M },
    ]);
}
