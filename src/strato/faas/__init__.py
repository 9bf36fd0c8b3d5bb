"""FaaS domain: keep-alive policies and the engines that evaluate them on traces."""
