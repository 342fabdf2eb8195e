//! Given/when/then: the conversation's rules.

use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;
use crate::values::{MessageBody, Name};

mod messages;

type Given = TestFramework<Conversation>;

const C: Uuid = Uuid::from_u128(1);
const ALICE: Uuid = Uuid::from_u128(10);
const BOB: Uuid = Uuid::from_u128(11);
const EVE: Uuid = Uuid::from_u128(12);
/// A message and a reaction.
const M: Uuid = Uuid::from_u128(99);
const R: Uuid = Uuid::from_u128(77);

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
    crate::payload::assert_round_trips(&events);
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
fn every_event_type_is_stored_under_its_name() {
    let mut events = with_bob();
    events.extend([
        ConversationEvent::MessagePosted {
            message_id: M,
            conversation_id: C,
            author_id: C,
            body: "b".into(),
            mentions: vec![],
        },
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
    crate::payload::assert_stored_names(&events);
}
