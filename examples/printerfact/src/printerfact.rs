// SPDX-License-Identifier: GPL-2.0

//! /dev/printerfact: every open() of the device hands out the next fact about
//! printers, and read() returns it.
//!
//! Needs Linux 6.18 or later: Rust misc devices can implement read() only
//! since 6.18 (MiscDevice::read_iter).
//!
//! There is no 6.18 Rust kernel in kwatch's CI, so this file is not compiled
//! there. It was checked by hand against the 6.18 sources:
//! MiscDevice::{open, read_iter}, MiscDeviceOptions and
//! MiscDeviceRegistration::register in rust/kernel/miscdevice.rs;
//! Kiocb::{file, ki_pos_mut} in rust/kernel/fs/kiocb.rs;
//! IovIterDest::simple_read_from_buffer in rust/kernel/iov.rs; and module!,
//! InPlaceModule, try_pin_init! and c_str! as samples/rust/rust_misc_device.rs
//! uses them. Kernels after 6.18 write c"..." instead of c_str!("...").

use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::{
    c_str,
    fs::{File, Kiocb},
    iov::IovIterDest,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
};

module! {
    type: PrinterFactModule,
    name: "printerfact",
    authors: ["kwatch"],
    description: "Facts about printers, from /dev/printerfact",
    license: "GPL",
}

const FACTS: &[&str] = &[
    "PC LOAD LETTER means: load letter-size paper into the paper cassette.\n",
    "Laser printers fuse toner onto the paper with heat and pressure.\n",
    "\"lp0 on fire\" is a real Linux kernel message, printed when a printer reports an error.\n",
    "The first inkjet printers for home computers appeared in the mid-1980s.\n",
];

/// Counts opens, so that each one gets the next fact.
static OPENS: AtomicUsize = AtomicUsize::new(0);

#[pin_data]
struct PrinterFactModule {
    #[pin]
    _miscdev: MiscDeviceRegistration<PrinterFact>,
}

impl kernel::InPlaceModule for PrinterFactModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pr_info!("/dev/printerfact is ready\n");
        let options = MiscDeviceOptions {
            name: c_str!("printerfact"),
        };
        try_pin_init!(Self {
            _miscdev <- MiscDeviceRegistration::register(options),
        })
    }
}

/// One open file. The fact is chosen at open(), so that reading it in
/// several parts still gives one whole fact.
struct PrinterFact {
    fact: &'static str,
}

#[vtable]
impl MiscDevice for PrinterFact {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        let n = OPENS.fetch_add(1, Ordering::Relaxed);
        let fact = FACTS[n % FACTS.len()];
        Ok(KBox::new(PrinterFact { fact }, GFP_KERNEL)?)
    }

    fn read_iter(mut kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let fact = kiocb.file().fact;
        iov.simple_read_from_buffer(kiocb.ki_pos_mut(), fact.as_bytes())
    }
}
