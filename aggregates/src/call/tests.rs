//! Given/when/then tests of the aggregate.

use chrono::TimeZone;
use cqrs_es::test::TestFramework;

use super::*;
use CallCommand as C;
use CallEvent as E;

type Given = TestFramework<Call>;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

const CALL: u128 = 100;
const CONVERSATION: u128 = 200;
const CALLER: u128 = 1;
const BOB: u128 = 2;
const CAROL: u128 = 3;

fn t(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, second).unwrap()
}

fn started() -> E {
    E::CallStarted {
        call_id: id(CALL),
        account_id: Uuid::nil(),
        conversation_id: id(CONVERSATION),
        kind: "video".into(),
        initiator_id: id(CALLER),
        callee_ids: vec![id(BOB), id(CAROL)],
    }
}

fn ringing() -> E {
    E::CallRinging {
        call_id: id(CALL),
        conversation_id: id(CONVERSATION),
        kind: "video".into(),
        initiator_id: id(CALLER),
        callee_ids: vec![id(BOB), id(CAROL)],
    }
}

fn accepted(user: u128, at: DateTime<Utc>) -> E {
    E::CallAccepted {
        call_id: id(CALL),
        conversation_id: id(CONVERSATION),
        initiator_id: id(CALLER),
        user_id: id(user),
        at,
    }
}

fn declined(user: u128, at: DateTime<Utc>) -> E {
    E::CallDeclined {
        call_id: id(CALL),
        conversation_id: id(CONVERSATION),
        initiator_id: id(CALLER),
        user_id: id(user),
        at,
    }
}

fn left(user: u128, at: DateTime<Utc>) -> E {
    E::CallParticipantLeft {
        call_id: id(CALL),
        conversation_id: id(CONVERSATION),
        initiator_id: id(CALLER),
        user_id: id(user),
        at,
    }
}

fn ended(state: &str, at: DateTime<Utc>, duration_s: i64) -> E {
    E::CallEnded {
        call_id: id(CALL),
        conversation_id: id(CONVERSATION),
        initiator_id: id(CALLER),
        callee_ids: vec![id(BOB), id(CAROL)],
        state: state.into(),
        at,
        duration_s,
    }
}

fn missed(callees: &[u128], at: DateTime<Utc>) -> E {
    E::CallMissed {
        call_id: id(CALL),
        conversation_id: id(CONVERSATION),
        initiator_id: id(CALLER),
        callee_ids: callees.iter().map(|c| id(*c)).collect(),
        at,
    }
}

#[test]
fn a_call_starts_calling_with_its_callees_but_never_the_caller_and_rings_once() {
    let start = C::Start {
        call_id: id(CALL),
        account_id: Uuid::nil(),
        conversation_id: id(CONVERSATION),
        kind: "video".into(),
        initiator_id: id(CALLER),
        callee_ids: vec![id(CAROL), id(CALLER), id(BOB), id(CAROL)],
    };
    Given::with(()).given_no_previous_events().when(start.clone()).then_expect_events(vec![started()]);
    Given::with(()).given(vec![started()]).when(start).then_expect_error(CallError::AlreadyStarted);
    Given::with(()).given(vec![started()]).when(C::Ring).then_expect_events(vec![ringing()]);
    Given::with(()).given(vec![started(), ringing()]).when(C::Ring).then_expect_events(vec![]);
}

#[test]
fn the_first_accept_makes_it_active_and_the_timer_then_does_nothing() {
    Given::with(())
        .given(vec![started(), ringing()])
        .when(C::Accept { user_id: id(BOB), at: t(5) })
        .then_expect_events(vec![accepted(BOB, t(5))]);
    Given::with(())
        .given(vec![started(), ringing(), accepted(BOB, t(5))])
        .when(C::Miss { at: t(30) })
        .then_expect_events(vec![]);
}

#[test]
fn the_timer_first_misses_the_call_for_those_who_never_answered_and_a_late_accept_is_refused() {
    Given::with(())
        .given(vec![started(), ringing(), declined(CAROL, t(3))])
        .when(C::Miss { at: t(30) })
        .then_expect_events(vec![missed(&[BOB], t(30))]);
    Given::with(())
        .given(vec![started(), ringing(), missed(&[BOB, CAROL], t(30))])
        .when(C::Accept { user_id: id(BOB), at: t(31) })
        .then_expect_error(CallError::Over);
}

#[test]
fn only_invited_callees_answer_and_only_once() {
    let given = || Given::with(()).given(vec![started(), accepted(BOB, t(5))]);
    given().when(C::Accept { user_id: id(9), at: t(6) }).then_expect_error(CallError::NotInvited);
    given().when(C::Accept { user_id: id(CALLER), at: t(6) }).then_expect_error(CallError::NotInvited);
    given().when(C::Accept { user_id: id(BOB), at: t(6) }).then_expect_error(CallError::AlreadyAnswered);
    given().when(C::Decline { user_id: id(BOB), at: t(6) }).then_expect_error(CallError::AlreadyAnswered);
}

#[test]
fn when_every_callee_declines_the_call_is_declined() {
    Given::with(())
        .given(vec![started(), ringing(), declined(CAROL, t(3))])
        .when(C::Decline { user_id: id(BOB), at: t(4) })
        .then_expect_events(vec![declined(BOB, t(4)), ended("declined", t(4), 0)]);
    Given::with(())
        .given(vec![
            started(),
            ringing(),
            declined(CAROL, t(3)),
            declined(BOB, t(4)),
            ended("declined", t(4), 0),
        ])
        .when(C::Decline { user_id: id(BOB), at: t(5) })
        .then_expect_error(CallError::Over);
}

#[test]
fn the_caller_cancelling_before_an_accept_ends_it() {
    Given::with(())
        .given(vec![started(), ringing()])
        .when(C::HangUp { user_id: id(CALLER), at: t(8) })
        .then_expect_events(vec![left(CALLER, t(8)), ended("ended", t(8), 0)]);
}

#[test]
fn the_call_ends_when_its_last_participant_leaves_with_its_duration_from_the_first_accept() {
    let active = vec![started(), ringing(), accepted(BOB, t(5)), accepted(CAROL, t(7))];
    Given::with(())
        .given(active.clone())
        .when(C::HangUp { user_id: id(CALLER), at: t(20) })
        .then_expect_events(vec![left(CALLER, t(20))]);
    let mut later = active.clone();
    later.extend([left(CALLER, t(20)), left(CAROL, t(30))]);
    Given::with(())
        .given(later)
        .when(C::HangUp { user_id: id(BOB), at: t(45) })
        .then_expect_events(vec![left(BOB, t(45)), ended("ended", t(45), 40)]);
}

#[test]
fn only_those_in_the_call_hang_up_and_not_after_it_ended() {
    let active = vec![started(), accepted(BOB, t(5))];
    Given::with(())
        .given(active.clone())
        .when(C::HangUp { user_id: id(CAROL), at: t(6) })
        .then_expect_error(CallError::NotAParticipant);
    Given::with(())
        .given(active)
        .when(C::HangUp { user_id: id(9), at: t(6) })
        .then_expect_error(CallError::NotAParticipant);
    Given::with(())
        .given(vec![started(), left(CALLER, t(8)), ended("ended", t(8), 0)])
        .when(C::HangUp { user_id: id(CALLER), at: t(9) })
        .then_expect_error(CallError::Over);
}

#[test]
fn stored_names_are_the_event_types() {
    crate::payload::assert_stored_names(&[
        started(),
        ringing(),
        accepted(BOB, t(1)),
        declined(BOB, t(1)),
        left(BOB, t(1)),
        ended("ended", t(1), 1),
        missed(&[BOB], t(1)),
    ]);
}
