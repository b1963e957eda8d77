//! `modeld token new`: a bearer token for the HTTP API, printed once beside the
//! `[[auth.token]]` table (its hash) to paste into the config.

use std::process::ExitCode;

pub fn new_token(name: &str, models: &[String], scopes: &[String]) -> ExitCode {
    use modeld::config::Scope;
    if let Some(bad) = scopes.iter().find(|s| !Scope::ALL.iter().any(|k| k.name() == s.as_str())) {
        eprintln!("modeld: token new: unknown scope '{bad}' (expected infer, metadata or probes)");
        return ExitCode::FAILURE;
    }
    let mut secret = [0u8; 32];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))
    {
        eprintln!("modeld: token new: cannot read /dev/urandom: {e}");
        return ExitCode::FAILURE;
    }
    let token: String =
        "mdl_".chars().chain(secret.iter().flat_map(|b| format!("{b:02x}").chars().collect::<Vec<_>>())).collect();
    let list = |items: &[String]| items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ");
    println!("# The token, shown once: give it to the client, which sends `Authorization: Bearer <token>`.");
    println!("token: {token}");
    println!("# Add this to the config's [auth] (or to its tokens_file as [[token]]), then `modeld reload`:");
    println!("[[auth.token]]");
    println!("name = {name:?}");
    println!("sha256 = \"{}\"", modeld::front::auth::hash_hex(&token));
    println!("models = [{}]", list(models));
    println!("scopes = [{}]", list(scopes));
    ExitCode::SUCCESS
}
