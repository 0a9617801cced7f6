// SPDX-License-Identifier: GPL-2.0

//! kwatch's gdb test module for the Rust 6.1 kernel: `rmmod kwgdb_rust` in
//! the guest calls `farewell` (6.1's kernel crate has no parameters or misc
//! devices to trigger it with).

use kernel::prelude::*;

module! {
    type: KwgdbRust,
    name: b"kwgdb_rust",
    license: b"GPL",
}

struct KwgdbRust {
    loads: u32,
}

#[inline(never)]
fn farewell(loads: u32) -> u32 {
    pr_info!("farewell after {} load(s)\n", loads);
    loads + 1
}

impl kernel::Module for KwgdbRust {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("loaded\n");
        Ok(KwgdbRust { loads: 1 })
    }
}

impl Drop for KwgdbRust {
    fn drop(&mut self) {
        self.loads = farewell(self.loads);
    }
}
