// Lines from real crates (cargo registry: rmcp, syn, serde_json, tokio-util, llama.cpp) that
// an earlier version of the generic rule flagged: code and test values, not secrets.
fn samples(node: Node, item2: Item, hparams: HParams, tuple: ((u8, u8),)) {
    let colon2_token = node.colon2_token;
    let or1_token = node.or1_token;
    let first_token = item2.first;
    let max_n_token = hparams.dsv4_max_n_token;
    let token = tuple.0.0;
    let token: &ProgressToken = &progress_token;
    let credentials: &StoredCredentials = &stored;
    let cancellation_token: &CancellationToken = &ct;
    let provider_token = AtomicU32Provider;
    const TOKEN: &str = "$serde_json::private::Number";
    let access_token = "access-1";
    let refresh_token = "refresh-2";
    let client_secret = "test-m2m-secret";
    let token = "m2m-access-token-12345";
    let progress_token = "progress-test-1";
    let token_regex = "\\d{1,3}(?=(?:\\d{3})*\\b)";
}
// static const xxh_u8 XXH3_kSecret[XXH_SECRET_DEFAULT_SIZE] = { ... };
// secret = XXH3_kSecret
