//! Runs a fake upstream until Ctrl-C, printing its base URLs and keys, e.g. to try
//! an SDK script by hand:
//!
//! ```text
//! cargo run -p amai-llm-fake-upstream --example fake_upstream
//! ```

#[tokio::main]
async fn main() -> Result<(), std::io::Error> {
    let fake = amai_llm_fake_upstream::FakeUpstream::start().await?;
    println!("OPENAI_BASE_URL={}", fake.openai_base_url());
    println!("OPENAI_API_KEY={}", fake.openai_key());
    println!("ANTHROPIC_BASE_URL={}", fake.anthropic_base_url());
    println!("ANTHROPIC_API_KEY={}", fake.anthropic_key());
    tokio::signal::ctrl_c().await?;
    println!("served {} requests", fake.hits());
    fake.shutdown().await;
    Ok(())
}
