const PASSWORD: &str = "Tr0ub4dor&3Gb0";
