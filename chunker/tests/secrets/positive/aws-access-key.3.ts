const creds = { accessKeyId: "AKIAVNDMEVZFBDOF34H3", region: "eu-west-1" };
export default creds;
