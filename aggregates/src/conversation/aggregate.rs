use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ConversationCommand, ConversationEvent};

pub const GROUP: &str = "group";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Admin,
    Member,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: Option<Uuid>,
    pub kind: String,
    pub title: Option<String>,
    pub archived: bool,
    /// Members and their roles: bounded by the conversation's size, not its history.
    pub members: BTreeMap<Uuid, MemberRole>,
    pub messages_posted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversationError {
    #[error("the conversation already exists")]
    AlreadyStarted,
    #[error("the conversation does not exist")]
    NotFound,
    #[error("the conversation is archived")]
    Archived,
    #[error("you are not a member of this conversation")]
    NotAMember,
    #[error("only a conversation admin may do this")]
    NotAnAdmin,
    #[error("the user is already a member")]
    AlreadyAMember,
    #[error("members can only be added to groups")]
    NotAGroup,
}

impl Conversation {
    /// The conversation exists and is not archived.
    fn open(&self) -> Result<Uuid, ConversationError> {
        let id = self.id.ok_or(ConversationError::NotFound)?;
        if self.archived {
            return Err(ConversationError::Archived);
        }
        Ok(id)
    }

    pub fn is_member(&self, user_id: Uuid) -> bool {
        self.members.contains_key(&user_id)
    }
}

impl Aggregate for Conversation {
    const TYPE: &'static str = "Conversation";
    type Command = ConversationCommand;
    type Event = ConversationEvent;
    type Error = ConversationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ConversationCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ConversationError> {
        match command {
            ConversationCommand::StartGroup { conversation_id, title, creator_id, member_ids, .. } => {
                if self.id.is_some() {
                    return Err(ConversationError::AlreadyStarted);
                }
                let started = ConversationEvent::ConversationStarted {
                    conversation_id,
                    kind: GROUP.into(),
                    title: Some(title.as_str().to_owned()),
                    topic: None,
                    created_by: creator_id,
                };
                sink.write(started, self).await;
                let creator = ConversationEvent::MemberAdded {
                    conversation_id,
                    user_id: creator_id,
                    role: MemberRole::Admin,
                    added_by: creator_id,
                };
                sink.write(creator, self).await;
                for user_id in member_ids {
                    if self.is_member(user_id) {
                        continue;
                    }
                    let added = ConversationEvent::MemberAdded {
                        conversation_id,
                        user_id,
                        role: MemberRole::Member,
                        added_by: creator_id,
                    };
                    sink.write(added, self).await;
                }
            }
            ConversationCommand::AddMember { actor_id, user_id, role } => {
                let conversation_id = self.open()?;
                if self.kind != GROUP {
                    return Err(ConversationError::NotAGroup);
                }
                match self.members.get(&actor_id) {
                    None => return Err(ConversationError::NotFound),
                    Some(MemberRole::Member) => return Err(ConversationError::NotAnAdmin),
                    Some(MemberRole::Admin) => {}
                }
                if self.is_member(user_id) {
                    return Err(ConversationError::AlreadyAMember);
                }
                sink.write(
                    ConversationEvent::MemberAdded { conversation_id, user_id, role, added_by: actor_id },
                    self,
                )
                .await;
            }
            ConversationCommand::PostMessage { message_id, author_id, body } => {
                let conversation_id = self.open()?;
                if !self.is_member(author_id) {
                    return Err(ConversationError::NotAMember);
                }
                let posted = ConversationEvent::MessagePosted {
                    message_id,
                    conversation_id,
                    author_id,
                    body: body.as_str().to_owned(),
                };
                sink.write(posted, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: ConversationEvent) {
        match event {
            ConversationEvent::ConversationStarted { conversation_id, kind, title, .. } => {
                self.id = Some(conversation_id);
                self.kind = kind;
                self.title = title;
            }
            ConversationEvent::MemberAdded { user_id, role, .. } => {
                self.members.insert(user_id, role);
            }
            ConversationEvent::MessagePosted { .. } => self.messages_posted += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::values::{MessageBody, Name};

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
        });
        crate::payload::assert_stored_names(&events);
    }
}
