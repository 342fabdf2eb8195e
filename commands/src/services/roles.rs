//! Custom roles: named sets of permissions an account defines beside the system roles. Users
//! hold a custom role by its id, so renaming it changes nothing for them, and a deleted role's
//! name taken again by a new role grants its holders nothing.

use parley_aggregates::permissions::{system_role, Permission};
use parley_aggregates::role::{Role, RoleCommand};
use parley_aggregates::values::Name;
use parley_eventstore::claims;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{field, grantable, Commands};
use crate::context::CommandContext;
use crate::dispatcher::{Idempotency, Idempotent};
use crate::error::DispatchError;
use crate::unit_of_work::{Executed, UnitOfWork};

/// The claim that keeps role names unique within an account (case-insensitively).
pub const ROLE_NAME_CLAIM: &str = "role_name";

/// The claim value of a role name in an account.
pub fn role_name_key(account_id: Uuid, name: &str) -> String {
    format!("{account_id}/{}", name.to_lowercase())
}

fn role_name(name: &str) -> Result<Name, DispatchError> {
    let name = field("name", Name::parse(name))?;
    if system_role(&name.as_str().to_lowercase()).is_some() {
        return Err(DispatchError::Invalid { field: "name", message: "is the name of a system role".into() });
    }
    Ok(name)
}

impl Commands {
    pub async fn create_role(
        &self,
        ctx: &CommandContext,
        name: &str,
        permissions: &[String],
        idempotency: Option<&Idempotency<'_, Executed<Role>>>,
    ) -> Result<Idempotent<Executed<Role>>, DispatchError> {
        ctx.require(Permission::RolesManage)?;
        let by = ctx.actor_id()?;
        let name = role_name(name)?;
        let permissions = grantable(ctx, permissions)?;
        let role_id = Uuid::now_v7();
        let create = RoleCommand::Create { role_id, account_id: ctx.account_id, name, permissions, by };
        self.dispatcher.execute_with::<Role>(ctx, &role_id.to_string(), create, idempotency).await
    }

    /// Renames a role or replaces its permissions; `expected_version` is the client's `If-Match`.
    pub async fn update_role(
        &self,
        ctx: &CommandContext,
        role_id: Uuid,
        name: Option<&str>,
        permissions: Option<&[String]>,
        expected_version: Option<i64>,
    ) -> Result<Executed<Role>, DispatchError> {
        ctx.require(Permission::RolesManage)?;
        let by = ctx.actor_id()?;
        let name = name.map(role_name).transpose()?;
        let permissions = permissions.map(|p| grantable(ctx, p)).transpose()?;
        let update = RoleCommand::Update { name, permissions, by };
        self.dispatcher.execute_expecting::<Role>(ctx, &role_id.to_string(), update, expected_version).await
    }

    /// Deletes a role: its holders keep its id, which grants nothing any more.
    pub async fn delete_role(
        &self,
        ctx: &CommandContext,
        role_id: Uuid,
    ) -> Result<Executed<Role>, DispatchError> {
        ctx.require(Permission::RolesManage)?;
        let by = ctx.actor_id()?;
        self.dispatcher.execute::<Role>(ctx, &role_id.to_string(), RoleCommand::Delete { by }).await
    }
}

/// What a role given by a client refers to, as users hold it: a system role's name, or a custom
/// role's id (given by id or by its current name). `None` for no role of this account.
async fn resolve_role(
    conn: &mut PgConnection,
    account_id: Uuid,
    given: &str,
) -> Result<Option<String>, DispatchError> {
    if system_role(given).is_some() {
        return Ok(Some(given.to_owned()));
    }
    let by_name = claims::holder(conn, ROLE_NAME_CLAIM, &role_name_key(account_id, given)).await?;
    if let Some(holder) = by_name {
        return Ok(Some(holder.stream_id));
    }
    let Ok(id) = given.parse::<Uuid>() else { return Ok(None) };
    // A live role of this account holds a name claim in it.
    let (live,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM claims WHERE kind = $1 AND owner_stream_type = 'Role' \
           AND owner_stream_id = $2 AND account_id = $3)",
    )
    .bind(ROLE_NAME_CLAIM)
    .bind(id.to_string())
    .bind(account_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(live.then(|| id.to_string()))
}

/// The roles a client gives, resolved as users hold them, each a role of the account; the
/// actor must hold every permission of each role it adds (`held`: roles the user keeps need
/// nothing), so nobody hands out more than they have.
pub(crate) async fn grantable_roles(
    uow: &mut UnitOfWork,
    given: &[String],
    held: &[String],
) -> Result<Vec<String>, DispatchError> {
    let (account_id, actor) = (uow.context().account_id, uow.context().actor.clone());
    let mut resolved = Vec::with_capacity(given.len());
    for name in given {
        let role =
            resolve_role(uow.conn(), account_id, name).await?.ok_or_else(|| DispatchError::Invalid {
                field: "roles",
                message: format!("{name:?} is not a role of this account"),
            })?;
        if !held.contains(&role) {
            let permissions = match system_role(&role) {
                Some(permissions) => permissions.to_vec(),
                None => uow.load::<Role>(&role).await?.0.permissions,
            };
            if let Some(missing) = permissions.iter().find(|p| !actor.can(**p)) {
                return Err(DispatchError::Forbidden(format!(
                    "cannot give the role {name}: it grants {}, which you do not hold",
                    missing.name()
                )));
            }
        }
        resolved.push(role);
    }
    Ok(resolved)
}
