//! Example extension: greets the name given as text input, using configured wording.
#![forbid(unsafe_code)]

use palisade_guest::{Error, Request, Response, config};

/// Default for the `greeting` config key.
const DEFAULT_GREETING: &str = "Hello";
/// Longest accepted name, in characters.
const MAX_NAME_CHARS: usize = 200;

fn handle(req: Request) -> Result<Response, Error> {
    let name = req.text()?.trim();
    if name.is_empty() {
        return Err(Error::invalid_input("expected a name, got empty input"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid_input(format!(
            "name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    let greeting = config::get("greeting").unwrap_or_else(|| DEFAULT_GREETING.to_owned());
    let punctuation = config::get("punctuation").unwrap_or_default();
    Ok(Response::text(format!("{greeting}, {name}{punctuation}")))
}

palisade_guest::extension!(handle);
