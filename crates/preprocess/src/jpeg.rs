//! JPEG decoding through libjpeg (the libjpeg-turbo code base as forked by MozJPEG, `mozjpeg-sys`,
//! portable C build), set up the way PIL's `JpegDecode.c` sets it up for `Image.open(p)` without
//! `draft()`: default decompression parameters (`JDCT_ISLOW` integer IDCT, fancy upsampling, no
//! scaling, no block smoothing changes), the colour space guessed by libjpeg from the JFIF/Adobe
//! markers, and the output colour space chosen from the number of components like PIL's modes:
//! 1 → `L` (`JCS_GRAYSCALE`), 3 → `RGB` (`JCS_RGB`, libjpeg's own YCbCr→RGB tables),
//! 4 → `CMYK;I` (`JCS_CMYK`; YCCK is converted to CMYK by libjpeg, as in PIL).

use std::ffi::CStr;
use std::mem;
use std::os::raw::{c_char, c_int, c_ulong};
use std::panic::{self, AssertUnwindSafe};

use mozjpeg_sys::{
    J_COLOR_SPACE, J_DCT_METHOD, JDIMENSION, JWRN_JPEG_EOF, jpeg_common_struct,
    jpeg_create_decompress, jpeg_decompress_struct, jpeg_destroy_decompress, jpeg_error_mgr,
    jpeg_mem_src, jpeg_read_header, jpeg_read_scanlines, jpeg_start_decompress, jpeg_std_error,
};

/// A decoded JPEG as PIL's decoder returns it (before `convert("RGB")`).
pub(crate) struct Decoded {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// 1 (L), 3 (RGB) or 4 (CMYK in libjpeg's polarity, i.e. Adobe-inverted for Adobe files).
    pub(crate) components: usize,
    /// Row-major, `components` bytes per pixel, no padding.
    pub(crate) pixels: Vec<u8>,
}

/// libjpeg's limit on either dimension (`JPEG_MAX_DIMENSION` in jmorecfg.h).
const JPEG_MAX_DIMENSION: u32 = 65500;

/// The panic payload our `error_exit` unwinds with (through C compiled with `-fexceptions`).
struct LibjpegError(String);

/// libjpeg's fatal-error hook: format the message and unwind to [`decode`] (libjpeg requires that
/// `error_exit` does not return). `resume_unwind` skips the panic hook, so nothing is printed.
unsafe extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    let mut buffer = [0u8; 80];
    // SAFETY: `cinfo.err` is the error manager set up in `decode`; `format_message` writes a
    // NUL-terminated string of at most JMSG_LENGTH_MAX (80) bytes into the buffer (the binding
    // types the buffer as a shared reference, so the pointer is passed through a cast signature).
    let message = unsafe {
        let err = &*cinfo.err;
        if let Some(format) = err.format_message {
            type Format = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, *mut c_char);
            let format: Format = mem::transmute(format);
            format(cinfo, buffer.as_mut_ptr().cast());
            CStr::from_bytes_until_nul(&buffer)
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "libjpeg error".to_string())
        } else {
            format!("libjpeg error {}", err.msg_code)
        }
    };
    panic::resume_unwind(Box::new(LibjpegError(message)));
}

/// libjpeg's warning/trace hook. Warnings about corrupt data that libjpeg recovers from are
/// counted and ignored, as PIL ignores them. Running out of data is an error instead: libjpeg
/// would pad the image with gray, but PIL's suspending data source never reports the end of the
/// file to libjpeg and raises "image file is truncated" (unless `LOAD_TRUNCATED_IMAGES`).
unsafe extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, msg_level: c_int) {
    // SAFETY: `cinfo.err` is the error manager set up in `decode`.
    let err = unsafe { &mut *cinfo.err };
    if msg_level < 0 {
        if err.msg_code == JWRN_JPEG_EOF as c_int {
            panic::resume_unwind(Box::new(LibjpegError(
                "image file is truncated (JPEG data ends early)".to_string(),
            )));
        }
        err.num_warnings += 1;
    }
}

/// Never print (libjpeg's default writes to stderr); PIL's `output_message` is silent too.
unsafe extern "C-unwind" fn output_message(_cinfo: &mut jpeg_common_struct) {}

/// Decodes a JPEG file held in memory. `max_bytes` bounds the decoded buffer.
pub(crate) fn decode(bytes: &[u8], max_bytes: usize) -> Result<Decoded, String> {
    // Boxed so that the addresses libjpeg keeps (cinfo.err) stay put.
    // SAFETY: both are plain C structs for which all-zero is a valid (empty) state.
    let mut err: Box<jpeg_error_mgr> = Box::new(unsafe { mem::zeroed() });
    let mut cinfo: Box<jpeg_decompress_struct> = Box::new(unsafe { mem::zeroed() });
    // SAFETY: standard libjpeg set-up; the error manager outlives cinfo (dropped after it).
    unsafe {
        cinfo.common.err = jpeg_std_error(&mut err);
    }
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    err.output_message = Some(output_message);
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: cinfo is zeroed with its error manager set, as jpeg_create_decompress expects;
        // the input slice outlives the decompressor (destroyed below, before returning).
        unsafe {
            jpeg_create_decompress(&mut *cinfo);
            decode_with(&mut cinfo, bytes, max_bytes)
        }
    }));
    // SAFETY: destroying is valid in any state, also after an error unwound out of libjpeg (the
    // libjpeg documentation's setjmp/longjmp recovery does the same), and on a zeroed struct.
    unsafe { jpeg_destroy_decompress(&mut cinfo) };
    drop(cinfo);
    match result {
        Ok(decoded) => decoded,
        Err(payload) => match payload.downcast::<LibjpegError>() {
            Ok(e) => Err(e.0),
            Err(other) => panic::resume_unwind(other),
        },
    }
}

/// # Safety
/// `cinfo` must be a freshly created decompressor whose `error_exit` unwinds.
unsafe fn decode_with(
    cinfo: &mut jpeg_decompress_struct,
    bytes: &[u8],
    max_bytes: usize,
) -> Result<Decoded, String> {
    // SAFETY (whole body): calls in the order the libjpeg API requires; libjpeg reports failures
    // through error_exit, which unwinds out of this function.
    unsafe {
        jpeg_mem_src(cinfo, bytes.as_ptr(), bytes.len() as c_ulong);
        jpeg_read_header(cinfo, 1);
        // PIL's JpegImagePlugin: 1 layer → "L", 3 → "RGB", 4 → "CMYK" (rawmode "CMYK;I"); it
        // rejects other component counts.
        let (out_space, components) = match cinfo.num_components {
            1 => (J_COLOR_SPACE::JCS_GRAYSCALE, 1),
            3 => (J_COLOR_SPACE::JCS_RGB, 3),
            4 => (J_COLOR_SPACE::JCS_CMYK, 4),
            n => return Err(format!("cannot handle {n}-component JPEG")),
        };
        cinfo.out_color_space = out_space;
        // libjpeg's defaults, stated explicitly: PIL changes them only in draft mode.
        cinfo.dct_method = J_DCT_METHOD::JDCT_ISLOW;
        cinfo.do_fancy_upsampling = 1;
        let (width, height) = (cinfo.image_width, cinfo.image_height);
        if width == 0 || height == 0 || width > JPEG_MAX_DIMENSION || height > JPEG_MAX_DIMENSION {
            return Err(format!("bad JPEG dimensions {width}x{height}"));
        }
        let row = width as usize * components;
        let size = row
            .checked_mul(height as usize)
            .filter(|&s| s <= max_bytes)
            .ok_or_else(|| format!("image too large ({width}x{height})"))?;
        jpeg_start_decompress(cinfo);
        if cinfo.output_width != width
            || cinfo.output_height != height
            || cinfo.output_components as usize != components
        {
            return Err("unexpected libjpeg output geometry".to_string());
        }
        let mut pixels = vec![0u8; size];
        let mut rows: Vec<*mut u8> = pixels
            .chunks_exact_mut(row)
            .map(|r| r.as_mut_ptr())
            .collect();
        while cinfo.output_scanline < height {
            let done = cinfo.output_scanline as usize;
            let read = jpeg_read_scanlines(
                cinfo,
                rows[done..].as_mut_ptr(),
                (height as usize - done) as JDIMENSION,
            );
            if read == 0 {
                return Err("libjpeg returned no scanlines".to_string());
            }
        }
        // Like PIL, stop after the last scanline: whatever follows it is not read.
        Ok(Decoded {
            width,
            height,
            components,
            pixels,
        })
    }
}
