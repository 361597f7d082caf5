//! `xalo demo`: every role of this build in one process, on SQLite files under the data
//! directory, until Ctrl-C or SIGTERM.

use xalo_core::{Config, Error};

use crate::roles;

pub async fn run(config: Config) -> Result<(), Error> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Error::from(e).context(format!("creating {}", config.data_dir.display())))?;
    let mut handles = Vec::new();
    for role in roles::ALL {
        match roles::start(role, &config).await {
            Ok(h) => handles.push(h),
            Err(e) => {
                for h in handles {
                    let _ = h.shutdown().await;
                }
                return Err(e.context(format!("starting {}", role.name)));
            }
        }
    }
    println!(
        "Xalo {} demo nation is running (data in {}).",
        xalo_core::VERSION,
        config.data_dir.display()
    );
    println!();
    for h in &handles {
        println!(
            "  {:<10} http://{}:{}/",
            h.role(),
            config.public_host,
            h.port()
        );
    }
    println!();
    println!("Health: append /healthz to any URL; metrics: /metrics. Stop with Ctrl-C.");
    xalo_core::server::shutdown_signal().await;
    for h in handles {
        h.shutdown().await?;
    }
    println!("Xalo demo stopped.");
    Ok(())
}
