// SPDX-License-Identifier: GPL-2.0

//! A minimal Rust module that says which version of it was loaded.
//!
//! It builds against Linux 6.1 (the Rust tree kwatch's tests use) and against current kernels.
//! Their module! macros disagree: 6.1 takes byte strings, 6.2 and later plain strings; 6.1
//! knows only `author:`, kernels since mid-2025 (6.17) only `authors:`, so no author is given.
//! Kbuild sets the module_byte_strings cfg on 6.1.

use kernel::prelude::*;

const VERSION: u32 = 1;

#[cfg(module_byte_strings)]
module! {
    type: HelloRust,
    name: b"hello_rust",
    description: b"kwatch example: prints its version on load and unload",
    license: b"GPL",
}

#[cfg(not(module_byte_strings))]
module! {
    type: HelloRust,
    name: "hello_rust",
    description: "kwatch example: prints its version on load and unload",
    license: "GPL",
}

struct HelloRust;

impl kernel::Module for HelloRust {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("version {} loaded\n", VERSION);
        Ok(HelloRust)
    }
}

impl Drop for HelloRust {
    fn drop(&mut self) {
        pr_info!("version {} unloaded\n", VERSION);
    }
}
