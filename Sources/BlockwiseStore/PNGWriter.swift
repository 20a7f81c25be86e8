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
    /// its own min...max), `scale` pixels per value, 1-pixel gaps.
    public static func channelGrid(values: [Float], shape: [Int], scale: Int = 4) -> Data {
        let (c, h, w) = (shape[0], shape[1], shape[2])
        let columns = Int(Double(c).squareRoot().rounded(.up))
        let rows = (c + columns - 1) / columns
        let tileW = w * scale, tileH = h * scale
        let width = columns * (tileW + 1) - 1, height = rows * (tileH + 1) - 1
        var pixels = [UInt8](repeating: 40, count: width * height)
        for channel in 0..<c {
            let plane = values[(channel * h * w)..<((channel + 1) * h * w)]
            let low = plane.min() ?? 0, high = plane.max() ?? 1
            let range = high > low ? high - low : 1
            let x0 = (channel % columns) * (tileW + 1), y0 = (channel / columns) * (tileH + 1)
            for y in 0..<tileH {
                for x in 0..<tileW {
                    let v = plane[plane.startIndex + (y / scale) * w + x / scale]
                    pixels[(y0 + y) * width + x0 + x] = UInt8(max(0, min(255, ((v - low) / range * 255).rounded())))
                }
            }
        }
        return grayscale(width: width, height: height, pixels: pixels)
    }
}
