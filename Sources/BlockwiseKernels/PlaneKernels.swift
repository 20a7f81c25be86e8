/// Vectorised loops over one contiguous plane of `count` floats (16 lanes at a time, then a
/// scalar tail), the inner loops of batch norm. Swift does not reassociate floating-point sums,
/// so a plain `s += x[i]` loop runs one add at a time; these keep 16 partial sums instead.
/// (The order of the additions therefore differs from a sequential sum, within float rounding.)

typealias Lanes = SIMD16<Float>

@inline(__always) func loadLanes(_ p: UnsafePointer<Float>) -> Lanes { UnsafeRawPointer(p).loadUnaligned(as: Lanes.self) }
@inline(__always) func storeLanes(_ v: Lanes, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: Lanes.self) }

/// `sum(x)`.
@inline(__always)
func planeSum(_ x: UnsafePointer<Float>, _ count: Int) -> Float {
    var lanes = Lanes(repeating: 0)
    var i = 0
    while i + 16 <= count { lanes += loadLanes(x + i); i += 16 }
    var s = lanes.sum()
    while i < count { s += x[i]; i += 1 }
    return s
}

/// `sum((x - mean)^2)`.
@inline(__always)
func planeSquaredDeviations(_ x: UnsafePointer<Float>, _ count: Int, mean: Float) -> Float {
    var lanes = Lanes(repeating: 0)
    let m = Lanes(repeating: mean)
    var i = 0
    while i + 16 <= count { let d = loadLanes(x + i) - m; lanes += d * d; i += 16 }
    var s = lanes.sum()
    while i < count { let d = x[i] - mean; s += d * d; i += 1 }
    return s
}

/// `y = x * scale + shift`, then `max(y, 0)` if `relu`; returns `sum(y^2)` (before the ReLU)
/// when `squares`, else 0. `y` may be `x`.
@inline(__always)
func planeAffine(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ count: Int, scale: Float, shift: Float,
                 relu: Bool, squares: Bool) -> Float {
    let a = Lanes(repeating: scale), b = Lanes(repeating: shift), zero = Lanes(repeating: 0)
    var lanes = Lanes(repeating: 0)
    var i = 0
    while i + 16 <= count {
        var v = loadLanes(x + i) * a + b
        if squares { lanes += v * v }
        if relu { v = v.replacing(with: zero, where: v .< zero) }
        storeLanes(v, y + i)
        i += 16
    }
    var s = lanes.sum()
    while i < count {
        var v = x[i] * scale + shift
        if squares { s += v * v }
        if relu { v = max(v, 0) }
        y[i] = v
        i += 1
    }
    return s
}

/// `(sum(g), sum(g * (x - mean)))` with `g = dy` masked to 0 where `mask <= 0` (when given).
@inline(__always)
func planeGradientSums(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, mask: UnsafePointer<Float>?, _ count: Int,
                       mean: Float) -> (Float, Float) {
    var a = Lanes(repeating: 0), b = Lanes(repeating: 0)
    let m = Lanes(repeating: mean), zero = Lanes(repeating: 0)
    var i = 0
    while i + 16 <= count {
        var g = loadLanes(dy + i)
        if let mask { g = zero.replacing(with: g, where: loadLanes(mask + i) .> zero) }
        a += g
        b += g * (loadLanes(x + i) - m)
        i += 16
    }
    var sa = a.sum(), sb = b.sum()
    while i < count {
        let g = mask.map { $0[i] > 0 ? dy[i] : 0 } ?? dy[i]
        sa += g
        sb += g * (x[i] - mean)
        i += 1
    }
    return (sa, sb)
}

/// `dx = gScale * g + xScale * x + shift` (or `dx +=` when `accumulate`), `g` as in
/// ``planeGradientSums``. `dx` may be `dy` when not accumulating.
@inline(__always)
func planeGradient(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                   mask: UnsafePointer<Float>?, _ count: Int, gScale: Float, xScale: Float, shift: Float, accumulate: Bool) {
    let ga = Lanes(repeating: gScale), xa = Lanes(repeating: xScale), c = Lanes(repeating: shift), zero = Lanes(repeating: 0)
    var i = 0
    while i + 16 <= count {
        var g = loadLanes(dy + i)
        if let mask { g = zero.replacing(with: g, where: loadLanes(mask + i) .> zero) }
        var v = ga * g + (xa * loadLanes(x + i) + c)
        if accumulate { v += loadLanes(UnsafePointer(dx + i)) }
        storeLanes(v, dx + i)
        i += 16
    }
    while i < count {
        let g = mask.map { $0[i] > 0 ? dy[i] : 0 } ?? dy[i]
        let v = gScale * g + (xScale * x[i] + shift)
        dx[i] = accumulate ? dx[i] + v : v
        i += 1
    }
}

/// At a residual block's output ReLU: `g = g * (y > 0)` in place, and `r = g + transportScale * (x * a + b)`
/// (the transport gradient of the recomputed residual `x * a + b`; just `r = g` when the scale is 0).
@inline(__always)
public func maskedResidualGradient(_ g: UnsafeMutablePointer<Float>, _ r: UnsafeMutablePointer<Float>, y: UnsafePointer<Float>,
                                   x: UnsafePointer<Float>, _ count: Int, transportScale: Float, a: Float, b: Float) {
    let zero = Lanes(repeating: 0), s = Lanes(repeating: transportScale), va = Lanes(repeating: a), vb = Lanes(repeating: b)
    let transport = transportScale != 0
    var i = 0
    while i + 16 <= count {
        let d = zero.replacing(with: loadLanes(UnsafePointer(g + i)), where: loadLanes(y + i) .> zero)
        storeLanes(d, g + i)
        storeLanes(transport ? d + s * (loadLanes(x + i) * va + vb) : d, r + i)
        i += 16
    }
    while i < count {
        let d = y[i] > 0 ? g[i] : 0
        g[i] = d
        r[i] = transport ? d + transportScale * (x[i] * a + b) : d
        i += 1
    }
}
