module.exports = { secretKey: '35WiEkC2vEZ5yVvlBbKk4MThoexySdft', port: 8080 };
