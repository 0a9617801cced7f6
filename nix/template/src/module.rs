// SPDX-License-Identifier: GPL-2.0

//! {{.Name}}: says hello when it is loaded and goodbye when it is unloaded.

use kernel::prelude::*;

module! {
    type: {{.Type}},
    name: "{{.Name}}",
    authors: ["kwatch"],
    description: "Hello from Rust",
    license: "GPL",
}

struct {{.Type}};

impl kernel::Module for {{.Type}} {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("hello from Rust\n");
        Ok({{.Type}})
    }
}

impl Drop for {{.Type}} {
    fn drop(&mut self) {
        pr_info!("goodbye\n");
    }
}
