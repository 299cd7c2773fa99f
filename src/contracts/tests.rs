use super::*;

#[test]
fn smoke() {
    let c = load_embedded().unwrap();
    println!("{}", serde_json::to_string_pretty(&c).unwrap());
}
