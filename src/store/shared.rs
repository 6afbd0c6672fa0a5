//! The queries both backends share. PostgreSQL and SQLite accept the same SQL here (`$n`
//! parameters, `ON CONFLICT … DO UPDATE`, `RETURNING`, epoch-millisecond integers), so the
//! `Store` implementation is written once and instantiated per backend by `impl_store!`.
//! Each backend supplies `self.pool` and `Self::MIGRATOR`.

macro_rules! impl_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn migrate(&self) -> $crate::store::StoreResult<()> {
                Self::MIGRATOR.run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> $crate::store::StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn upsert_callback(
                &self,
                callback: &$crate::domain::NewCallback,
            ) -> $crate::store::StoreResult<$crate::domain::CallbackId> {
                let now = $crate::domain::now_millis();
                sqlx::query_scalar(
                    "INSERT INTO callbacks (project_id, url, event, region, secret_token, enabled, \
                         creator, updater, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, TRUE, $6, $6, $7, $7) \
                     ON CONFLICT (project_id, url, event) DO UPDATE SET \
                         region = excluded.region, secret_token = excluded.secret_token, \
                         enabled = TRUE, failure_time = NULL, disabled_reason = NULL, \
                         updater = excluded.updater, updated_at = excluded.updated_at \
                     RETURNING id",
                )
                .bind(callback.project_id.as_str())
                .bind(&callback.url)
                .bind(callback.event.as_str())
                .bind(callback.region.as_str())
                .bind(callback.secret_token.as_deref())
                .bind(callback.user.as_str())
                .bind(now)
                .fetch_one(&self.pool)
                .await
            }

            async fn list_callbacks(
                &self,
                project: &$crate::domain::ProjectId,
                page: $crate::domain::PageRequest,
            ) -> $crate::store::StoreResult<(u64, Vec<$crate::domain::Callback>)> {
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM callbacks WHERE project_id = $1")
                        .bind(project.as_str())
                        .fetch_one(&self.pool)
                        .await?;
                let rows: Vec<$crate::store::rows::CallbackRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM callbacks WHERE project_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
                    $crate::store::rows::CALLBACK_COLUMNS
                ))
                .bind(project.as_str())
                .bind(page.limit())
                .bind(page.offset())
                .fetch_all(&self.pool)
                .await?;
                let records = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<Result<_, _>>()?;
                Ok((count.unsigned_abs(), records))
            }

            async fn delete_callback(
                &self,
                project: &$crate::domain::ProjectId,
                id: $crate::domain::CallbackId,
            ) -> $crate::store::StoreResult<bool> {
                let done = sqlx::query("DELETE FROM callbacks WHERE project_id = $1 AND id = $2")
                    .bind(project.as_str())
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn member_role(
                &self,
                project: &$crate::domain::ProjectId,
                user: &$crate::domain::UserId,
            ) -> $crate::store::StoreResult<Option<$crate::domain::MemberRole>> {
                let role: Option<String> = sqlx::query_scalar(
                    "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2",
                )
                .bind(project.as_str())
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?;
                role.map(|role| {
                    role.parse().map_err(|e| sqlx::Error::ColumnDecode {
                        index: "role".to_owned(),
                        source: Box::new(e),
                    })
                })
                .transpose()
            }

            async fn set_member(
                &self,
                project: &$crate::domain::ProjectId,
                user: &$crate::domain::UserId,
                role: $crate::domain::MemberRole,
            ) -> $crate::store::StoreResult<()> {
                let now = $crate::domain::now_millis();
                sqlx::query(
                    "INSERT INTO project_members (project_id, user_id, role, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $4) \
                     ON CONFLICT (project_id, user_id) DO UPDATE SET \
                         role = excluded.role, updated_at = excluded.updated_at",
                )
                .bind(project.as_str())
                .bind(user.as_str())
                .bind(role.as_str())
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn remove_member(
                &self,
                project: &$crate::domain::ProjectId,
                user: &$crate::domain::UserId,
            ) -> $crate::store::StoreResult<bool> {
                let done =
                    sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2")
                        .bind(project.as_str())
                        .bind(user.as_str())
                        .execute(&self.pool)
                        .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_members(
                &self,
                project: &$crate::domain::ProjectId,
            ) -> $crate::store::StoreResult<Vec<$crate::domain::Member>> {
                let rows: Vec<$crate::store::rows::MemberRow> = sqlx::query_as(
                    "SELECT project_id, user_id, role, created_at, updated_at \
                     FROM project_members WHERE project_id = $1 ORDER BY user_id",
                )
                .bind(project.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }
        }
    };
}

pub(crate) use impl_store;
