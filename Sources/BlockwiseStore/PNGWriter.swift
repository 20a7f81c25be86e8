import CZlib
import Foundation

/// A minimal PNG encoder: 8-bit grayscale, no interlace, one IDAT chunk compressed by zlib.
public enum PNGWriter {
    /// Encodes `pixels` (row-major, width x height, 0...255) as a PNG file's bytes.
    public static func grayscale(width: Int, height: Int, pixels: [UInt8]) -> Data {
        precondition(pixels.count == width * height)
        var raw = [UInt8]()
        raw.reserveCapacity((width + 1) * height)
        for y in 0..<height {
            raw.append(0)  // filter type: none
            raw.append(contentsOf: pixels[(y * width)..<((y + 1) * width)])
        }
        var compressedLength = compressBound(uLong(raw.count))
        var compressed = [UInt8](repeating: 0, count: Int(compressedLength))
        _ = compress2(&compressed, &compressedLength, raw, uLong(raw.count), 9)
        var png = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var header = Data()
        header.append(bigEndian(UInt32(width)))
        header.append(bigEndian(UInt32(height)))
        header.append(contentsOf: [8, 0, 0, 0, 0])  // 8-bit, grayscale, deflate, no filter, no interlace
        png.append(chunk("IHDR", header))
        png.append(chunk("IDAT", Data(compressed.prefix(Int(compressedLength)))))
        png.append(chunk("IEND", Data()))
        return png
    }

    static func bigEndian(_ value: UInt32) -> Data {
        Data([UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)])
    }

    static func chunk(_ type: String, _ body: Data) -> Data {
        var data = bigEndian(UInt32(body.count))
        let typed = Data(type.utf8) + body
        data.append(typed)
        let crc = typed.withUnsafeBytes { UInt32(crc32(0, $0.baseAddress?.assumingMemoryBound(to: Bytef.self), uInt($0.count))) }
        data.append(bigEndian(crc))
        return data
    }

    /// The channels of one sample [C, H, W] as a grid of grayscale tiles (each channel scaled to
    /// its own min...max, its number in the tile's corner), each tile at least 84 pixels wide,
    /// 2-pixel gaps, under a caption: `title` large (the class) and `subtitle` small (level, split,
    /// sample, shape). Pixels: width x height bytes, built once.
    public static func channelGrid(values: [Float], shape: [Int], title: String = "", subtitle: String = "") -> Data {
        let (c, h, w) = (shape[0], shape[1], shape[2])
        let scale = max(1, (84 + max(h, w) - 1) / max(h, w))
        let columns = Int(Double(c).squareRoot().rounded(.up))
        let rows = (c + columns - 1) / columns
        let gap = 2, margin = 8
        let tileW = w * scale, tileH = h * scale
        let gridW = columns * (tileW + gap) - gap, gridH = rows * (tileH + gap) - gap
        let titleH = title.isEmpty ? 0 : 2 * BitmapFont.height + 4
        let subtitleH = subtitle.isEmpty ? 0 : BitmapFont.height + 6
        let width = max(gridW, BitmapFont.textWidth(title, scale: 2), BitmapFont.textWidth(subtitle)) + 2 * margin
        let height = margin + titleH + subtitleH + gridH + margin
        var pixels = [UInt8](repeating: 40, count: width * height)
        BitmapFont.draw(title, into: &pixels, bufferWidth: width, x: margin, y: margin, scale: 2)
        BitmapFont.draw(subtitle, into: &pixels, bufferWidth: width, x: margin, y: margin + titleH, value: 200)
        let gridTop = margin + titleH + subtitleH
        for channel in 0..<c {
            let plane = values[(channel * h * w)..<((channel + 1) * h * w)]
            let low = plane.min() ?? 0, high = plane.max() ?? 1
            let range = high > low ? high - low : 1
            let x0 = margin + (channel % columns) * (tileW + gap), y0 = gridTop + (channel / columns) * (tileH + gap)
            for y in 0..<tileH {
                for x in 0..<tileW {
                    let v = plane[plane.startIndex + (y / scale) * w + x / scale]
                    pixels[(y0 + y) * width + x0 + x] = UInt8(max(0, min(255, ((v - low) / range * 255).rounded())))
                }
            }
            if c > 1 {
                // The channel number, white on a black box, in the tile's top-left corner.
                let label = String(channel)
                let boxW = BitmapFont.textWidth(label) + 2
                for y in y0..<min(y0 + BitmapFont.height, height) {
                    for x in x0..<min(x0 + boxW, width) { pixels[y * width + x] = 0 }
                }
                BitmapFont.draw(label, into: &pixels, bufferWidth: width, x: x0 + 1, y: y0)
            }
        }
        return grayscale(width: width, height: height, pixels: pixels)
    }
}
