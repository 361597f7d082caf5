//! Vietnamese name frequencies for the synthetic population. Family-name shares follow
//! published estimates (Nguyễn about 38%); middle and given names are common choices.

/// (name, weight)
pub const FAMILY: &[(&str, u32)] = &[
    ("Nguyễn", 380),
    ("Trần", 110),
    ("Lê", 95),
    ("Phạm", 70),
    ("Hoàng", 41),
    ("Huỳnh", 10),
    ("Phan", 45),
    ("Vũ", 30),
    ("Võ", 10),
    ("Đặng", 21),
    ("Bùi", 20),
    ("Đỗ", 14),
    ("Hồ", 13),
    ("Ngô", 13),
    ("Dương", 10),
    ("Lý", 5),
    ("Đinh", 10),
    ("Trương", 10),
    ("Lâm", 5),
    ("Mai", 5),
    ("Tô", 3),
    ("Hà", 5),
    ("Cao", 4),
    ("Lương", 4),
    ("Lưu", 3),
    ("Chu", 2),
    ("Tạ", 2),
    ("Triệu", 2),
    ("Thái", 2),
];

pub const MIDDLE_MALE: &[(&str, u32)] = &[
    ("Văn", 30),
    ("Đức", 10),
    ("Minh", 10),
    ("Quang", 8),
    ("Hữu", 8),
    ("Thanh", 6),
    ("Công", 6),
    ("Xuân", 4),
    ("Hoàng", 4),
    ("Anh", 4),
    ("Gia", 4),
    ("Tuấn", 3),
    ("Ngọc", 3),
];

pub const MIDDLE_FEMALE: &[(&str, u32)] = &[
    ("Thị", 40),
    ("Ngọc", 10),
    ("Thu", 7),
    ("Thanh", 6),
    ("Minh", 5),
    ("Hồng", 5),
    ("Phương", 5),
    ("Kim", 4),
    ("Bảo", 4),
    ("Mai", 3),
    ("Khánh", 3),
    ("Diệu", 3),
    ("Hoài", 3),
];

pub const GIVEN_MALE: &[&str] = &[
    "An", "Bảo", "Bình", "Cường", "Dũng", "Duy", "Đạt", "Đức", "Hải", "Hiếu", "Hoàng", "Hùng",
    "Huy", "Khang", "Khoa", "Kiên", "Long", "Minh", "Nam", "Nghĩa", "Phong", "Phúc", "Quân",
    "Quang", "Sơn", "Tài", "Thắng", "Thành", "Tiến", "Trung", "Tuấn", "Việt", "Vinh",
];

pub const GIVEN_FEMALE: &[&str] = &[
    "An", "Anh", "Châu", "Chi", "Dung", "Giang", "Hà", "Hằng", "Hạnh", "Hoa", "Hương", "Huyền",
    "Lan", "Linh", "Mai", "My", "Nga", "Ngân", "Ngọc", "Nhung", "Oanh", "Phương", "Quỳnh", "Tâm",
    "Thảo", "Thu", "Thủy", "Trang", "Trâm", "Uyên", "Vân", "Vy", "Yến",
];

/// Approximate population of the 34 provinces after the 2025 merger, in hundreds of
/// thousands: the weights for where people live.
pub const PROVINCE_WEIGHTS: &[(&str, u32)] = &[
    ("01", 87),
    ("04", 6),
    ("08", 19),
    ("11", 7),
    ("12", 5),
    ("14", 14),
    ("15", 18),
    ("19", 18),
    ("20", 8),
    ("22", 14),
    ("24", 37),
    ("25", 40),
    ("31", 47),
    ("33", 36),
    ("37", 44),
    ("38", 43),
    ("40", 38),
    ("42", 16),
    ("44", 19),
    ("46", 14),
    ("48", 31),
    ("51", 22),
    ("52", 36),
    ("56", 22),
    ("66", 33),
    ("68", 39),
    ("75", 45),
    ("79", 140),
    ("80", 33),
    ("82", 44),
    ("86", 43),
    ("91", 49),
    ("92", 42),
    ("96", 26),
];

pub const STREETS: &[&str] = &[
    "Lê Lợi",
    "Trần Hưng Đạo",
    "Nguyễn Trãi",
    "Hai Bà Trưng",
    "Lý Thường Kiệt",
    "Quang Trung",
    "Hùng Vương",
    "Điện Biên Phủ",
    "Nguyễn Huệ",
    "Phan Chu Trinh",
    "Lê Duẩn",
    "Võ Thị Sáu",
];

/// (VSIC 2018 code, activity)
pub const BUSINESS_LINES: &[(&str, &str)] = &[
    ("6201", "Lập trình máy vi tính"),
    (
        "4711",
        "Bán lẻ lương thực, thực phẩm trong cửa hàng tổng hợp",
    ),
    ("5610", "Nhà hàng và dịch vụ ăn uống"),
    ("4100", "Xây dựng nhà các loại"),
    ("0111", "Trồng lúa"),
    ("1071", "Sản xuất các loại bánh từ bột"),
    ("4933", "Vận tải hàng hóa bằng đường bộ"),
    ("8559", "Giáo dục khác"),
    ("6810", "Kinh doanh bất động sản"),
    ("4620", "Bán buôn nông, lâm sản nguyên liệu"),
    ("5510", "Dịch vụ lưu trú ngắn ngày"),
    ("1410", "May trang phục"),
];

pub const COMPANY_WORDS: &[&str] = &[
    "Hưng Thịnh",
    "Phát Đạt",
    "An Phú",
    "Việt Tiến",
    "Thành Công",
    "Hoàng Long",
    "Minh Khang",
    "Sao Mai",
    "Bình Minh",
    "Đại Dương",
    "Trường Sơn",
    "Hồng Hà",
    "Tân Tiến",
    "Phú Quý",
];
