const map = new google.maps.Map(el, { key: "AIzauA-6yuohls3WVpX_3hCsI95pQKaAE1qleZd" });
