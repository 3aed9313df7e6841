//! Language server shell (issue 5).
