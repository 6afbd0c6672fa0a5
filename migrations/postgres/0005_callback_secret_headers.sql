-- Custom headers of a callback (bk-ci's `SECRET_PARAM`, a `HeaderSecretParam`), sent with every
-- delivery: a JSON array of [name, value] pairs, sealed like `secret_token` when
-- SECRET_ENCRYPTION_KEY is set (`enc:v1:…`, bound to the row's project and URL). NULL: none.
ALTER TABLE callbacks ADD COLUMN secret_headers TEXT;
