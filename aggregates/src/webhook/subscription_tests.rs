//! Given/when/then tests of the aggregate.

use cqrs_es::test::TestFramework;

use super::*;
use WebhookSubscriptionCommand as C;
use WebhookSubscriptionEvent as E;

type Given = TestFramework<WebhookSubscription>;

fn id() -> Uuid {
    Uuid::from_u128(9)
}

fn created() -> E {
    E::WebhookSubscriptionCreated {
        subscription_id: id(),
        account_id: Uuid::nil(),
        url: "https://example.com/hook".into(),
        event_types: vec!["MessageEdited".into(), "MessagePosted".into()],
        description: None,
        secret_fingerprint: "fp1".into(),
        created_by: Uuid::nil(),
    }
}

fn disabled(reason: &str) -> E {
    E::WebhookSubscriptionDisabled {
        subscription_id: id(),
        account_id: Uuid::nil(),
        reason: reason.into(),
        disabled_by: None,
    }
}

#[test]
fn a_subscription_is_created_once_with_its_types_sorted_once_each() {
    let create = C::Create {
        subscription_id: id(),
        account_id: Uuid::nil(),
        url: "https://example.com/hook".into(),
        event_types: vec!["MessagePosted".into(), "MessageEdited".into(), "MessagePosted".into()],
        description: None,
        secret_fingerprint: "fp1".into(),
        by: Uuid::nil(),
    };
    Given::with(()).given_no_previous_events().when(create.clone()).then_expect_events(vec![created()]);
    Given::with(())
        .given(vec![created()])
        .when(create)
        .then_expect_error(WebhookSubscriptionError::AlreadyCreated);
}

#[test]
fn disabling_and_enabling_record_only_changes() {
    let disable = C::Disable { reason: "gone".into(), by: None };
    Given::with(()).given(vec![created()]).when(disable.clone()).then_expect_events(vec![disabled("gone")]);
    Given::with(()).given(vec![created(), disabled("gone")]).when(disable).then_expect_events(vec![]);
    Given::with(()).given(vec![created()]).when(C::Enable { by: Uuid::nil() }).then_expect_events(vec![]);
    Given::with(())
        .given(vec![created(), disabled("gone")])
        .when(C::Enable { by: Uuid::nil() })
        .then_expect_events(vec![E::WebhookSubscriptionEnabled {
            subscription_id: id(),
            account_id: Uuid::nil(),
            enabled_by: Uuid::nil(),
        }]);
}

#[test]
fn an_update_that_changes_nothing_records_nothing_and_a_deleted_subscription_takes_no_command() {
    let same = C::Update {
        url: Some("https://example.com/hook".into()),
        event_types: Some(vec!["MessagePosted".into(), "MessageEdited".into()]),
        description: None,
        by: Uuid::nil(),
    };
    Given::with(()).given(vec![created()]).when(same).then_expect_events(vec![]);
    let deleted = E::WebhookSubscriptionDeleted {
        subscription_id: id(),
        account_id: Uuid::nil(),
        deleted_by: Uuid::nil(),
    };
    Given::with(())
        .given(vec![created(), deleted])
        .when(C::Enable { by: Uuid::nil() })
        .then_expect_error(WebhookSubscriptionError::NotFound);
}

#[test]
fn stored_names_are_the_event_types() {
    crate::payload::assert_stored_names(&[
        created(),
        E::WebhookSubscriptionUpdated {
            subscription_id: id(),
            account_id: Uuid::nil(),
            url: "u".into(),
            event_types: vec![],
            description: None,
            updated_by: Uuid::nil(),
        },
        E::WebhookSecretRotated {
            subscription_id: id(),
            account_id: Uuid::nil(),
            secret_fingerprint: "fp".into(),
            previous_valid_until: DateTime::<Utc>::MIN_UTC,
            rotated_by: Uuid::nil(),
        },
        disabled("x"),
        E::WebhookSubscriptionEnabled {
            subscription_id: id(),
            account_id: Uuid::nil(),
            enabled_by: Uuid::nil(),
        },
        E::WebhookSubscriptionDeleted {
            subscription_id: id(),
            account_id: Uuid::nil(),
            deleted_by: Uuid::nil(),
        },
    ]);
}
