//! The `project_members` table: local membership.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::rows::{MemberRow, decode};
use super::{Backend, RowsAffected, SqlStore};
use crate::domain::{Member, MemberRole, ProjectId, UserId, now_millis};
use crate::store::{MemberStore, StoreResult};

#[async_trait]
impl<B: Backend> MemberStore for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    async fn member_role(
        &self,
        project: &ProjectId,
        user: &UserId,
    ) -> StoreResult<Option<MemberRole>> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2",
        )
        .bind(project.as_str())
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?;
        role.map(|role| decode("role", &role)).transpose()
    }

    async fn set_member(
        &self,
        project: &ProjectId,
        user: &UserId,
        role: MemberRole,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO project_members (project_id, user_id, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (project_id, user_id) DO UPDATE SET \
                 role = excluded.role, updated_at = excluded.updated_at",
        )
        .bind(project.as_str())
        .bind(user.as_str())
        .bind(role.as_str())
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn remove_member(&self, project: &ProjectId, user: &UserId) -> StoreResult<bool> {
        let done =
            sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2")
                .bind(project.as_str())
                .bind(user.as_str())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_members(&self, project: &ProjectId) -> StoreResult<Vec<Member>> {
        let rows: Vec<MemberRow> = sqlx::query_as(
            "SELECT project_id, user_id, role, created_at, updated_at \
             FROM project_members WHERE project_id = $1 ORDER BY user_id",
        )
        .bind(project.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }
}
