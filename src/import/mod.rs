//! `import-bkci`: bring bk-ci's registrations over.

pub mod aes;
